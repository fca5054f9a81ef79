"""bench/cost_bench.py on one family and size, one round: every figure is produced."""

from __future__ import annotations

import json

import pytest
from cost_bench import main


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_one_round_reports_the_measurement_time_per_model(tmp_path, capsys):
    result = main(["--families", "late_fusion", "--sizes", "tiny", "--rounds", "1", "--repeats", "1",
                   "--dir", str(tmp_path / "data"), "--json", str(tmp_path / "cost.json")])
    assert set(result["seconds"]) == {"late_fusion/tiny"}
    assert result["seconds"]["late_fusion/tiny"]["n"] == 1 and result["seconds"]["late_fusion/tiny"]["median"] > 0
    assert result["settings"]["repeats"] == 1
    assert json.loads((tmp_path / "cost.json").read_text())["seconds"] == result["seconds"]
    assert "machine at end" in capsys.readouterr().out
