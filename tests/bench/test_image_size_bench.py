"""bench/image_size_bench.py at its smallest: both roles at both sizes timed, both ratios reported."""

from __future__ import annotations

import json

import pytest
from image_size_bench import main


@pytest.mark.slow  # easy-VQA conversion and four trainers
def test_one_round_times_both_sizes_of_both_roles(tmp_path, capsys):
    result = main(["--size", "64", "--rounds", "1", "--steps", "1", "--dir", str(tmp_path / "work"),
                   "--json", str(tmp_path / "r.json")])
    assert set(result["seconds"]) == {"teacher/64", "teacher/32", "student_only/64", "student_only/32"}
    assert all(s["median"] > 0 and s["n"] == 1 for s in result["seconds"].values())
    assert set(result["ratios"]) == {"teacher step, 32x32 / 64x64", "student_only step, 32x32 / 64x64"}
    assert all(r["median"] > 0 for r in result["ratios"].values())
    assert json.loads((tmp_path / "r.json").read_text())["ratios"] == result["ratios"]
    assert "machine at end" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--steps", "0"], ["--rounds", "0"]])
def test_counts_below_one_are_refused_before_any_work(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*args, "--dir", str(tmp_path / "work")])
    assert stop.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before the data was made
