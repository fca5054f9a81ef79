"""bench/pipeline_bench.py at its smallest: every variant is timed and every ratio reported."""

from __future__ import annotations

import json

import pytest
from pipeline_bench import main


@pytest.mark.slow  # ~18 CPU-s: data, two trainers and four models
def test_one_round_reports_every_ratio(tmp_path, capsys):
    result = main(["--size", "120", "--rounds", "1", "--dir", str(tmp_path / "work"), "--json", str(tmp_path / "p.json")])
    assert set(result["seconds"]) == {"epoch/in_memory", "epoch/per_sample", "val/in_memory", "val/per_sample",
                                      "student/fused", "student/loop", "teacher/fused", "teacher/loop"}
    assert all(s["median"] > 0 for s in result["seconds"].values())
    assert result["seconds"]["student/fused"]["n"] == 5  # 5 optimizer steps per round
    assert len(result["ratios"]) == 4 and all(r["median"] > 0 for r in result["ratios"].values())
    assert json.loads((tmp_path / "p.json").read_text())["ratios"] == result["ratios"]
    assert "machine at end" in capsys.readouterr().out
