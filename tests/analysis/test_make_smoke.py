"""``make reproduce-table2 SCALE=smoke``: data -> grids -> tables, figures, report, for real."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_make_reproduce_table2_smoke(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "MSD_DATA_DIR": str(tmp_path / "data"), "WANDB_DIR": str(tmp_path / "wandb"),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = ["make", "-C", str(REPO), "reproduce-table2", "SCALE=smoke", f"RESULTS={results}"]
    # An environment that is already set up is not reinstalled under the developer's feet.
    stamps = [s for s in (".venv/.msd-setup-stamp", ".conda-env/.msd-setup-stamp") if (REPO / s).exists()]
    command += [f"--old-file={s}" for s in stamps]
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.time() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rel in ("tables/table2.md", "tables/table2.csv", "tables/table2.tex", "tables/saliency.md",
                "tables/ablations.md", "figures/figure1_output_density.png", "figures/figure1_output_density.pdf",
                "report/index.html"):
        assert (results / rel).stat().st_size > 0, rel
    table2 = (results / "tables" / "table2.md").read_text()
    kd = next(line for line in table2.splitlines() if line.startswith("| KD |"))
    assert "(1)" in kd  # one seed per cell at smoke scale, and every dataset has its KD run
    assert "—‡" in next(line for line in table2.splitlines() if line.startswith("| MSD-learned |"))
    print(f"make reproduce-table2 SCALE=smoke: {elapsed:.0f} s")
    assert elapsed < 600, f"the smoke pipeline took {elapsed:.0f} s"
