"""bench/cache_bench.py at a few hundred questions: every figure is produced, from a cache the
real writer built, and the cache is removed afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cache_bench import build, main, stand_in_batches


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_small_run_reports_every_figure_and_cleans_up(tmp_path, capsys):
    result = main(["--train", "300", "--val", "100", "--rounds", "1", "--batches", "2", "--verify-rounds", "1", "--dir", str(tmp_path),
                   "--json", str(tmp_path / "figures.json")])
    out = capsys.readouterr().out
    assert not (tmp_path / "cache").exists()
    assert json.loads((tmp_path / "figures.json").read_text())["sizes"]["train"] == 300
    build_figures, measured = result["build"], result["measure"]
    assert 0 < build_figures["rss_after_imports_mb"] <= build_figures["peak_rss_mb"]
    assert 0 < build_figures["stand_in_teacher_s"] < build_figures["build_s"]
    assert 0.0 <= build_figures["val_recheck"]["val/vqa2/vqa_accuracy"] <= 1.0
    # 300 + 100 + 100 rows of 3 x 3,129 fp16 logits, plus saliency, headers and meta.json
    assert result["bytes_on_disk"] > 500 * 3 * 3129 * 2 and result["files"] == 7
    assert set(measured["hash_gbps"]) == {"xxh3_128", "blake2b"}
    assert set(measured["cold_read_gbps"]) == {"read only", "read + xxh3_128", "read + blake2b"}
    assert all(v["median"] > 0 for v in measured["batch_read_median_s"].values())
    assert measured["open_full_s"]["n"] == 1 and measured["full_verify_cold_gbps"] > 0
    for label in ("build peak RSS", "open, lazy verification", "first batch after opening", "machine at end"):
        assert label in out


def test_the_build_writes_a_cache_that_opens_and_holds_the_stand_in_logits(tmp_path):
    from benchmark.distill.cache import open_cache

    sizes = {"train": 130, "val": 70, "test": 10, "labels": 50}
    figures = build(tmp_path / "c", sizes, batch=16)
    cache = open_cache(tmp_path / "c", "cache-bench", verify="full")
    rows, outputs, _ = next(stand_in_batches("val", 70, 50, 16, [0.0]))
    cached = cache.logits("val", torch.from_numpy(rows))
    assert np.allclose(cached["text"].numpy(), outputs["text"].clamp(-6e4, 6e4).numpy(), atol=0.02, rtol=1e-3)
    assert figures["peak_rss_mb"] > 0
