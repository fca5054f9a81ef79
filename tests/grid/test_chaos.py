"""The chaos test, reduced: four SIGKILLs (one per scenario: ``msd run``, two concurrent
``msd run``, a grid worker, the grid runner), each followed by a rerun; nothing may be lost,
trained twice, left inconsistent, or become a second W&B run. ``bench/chaos.py`` runs the
full version (24 kills) and prints the figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sigkills_at_random_points_lose_nothing_and_train_nothing_twice(tmp_path, grid_tools):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(grid_tools.repo / "bench" / "chaos.py"), "--kills", "4",
                           "--seed", "1", "--root", str(tmp_path / "chaos"), "--json", str(out)],
                          capture_output=True, text=True, timeout=1800)
    figures = json.loads(out.read_text())
    assert figures["kills"] == 4, proc.stdout
    assert (figures["lost"], figures["trained_twice"], figures["inconsistent"], figures["duplicated_wandb_runs"],
            figures["errors"]) == (0, 0, 0, 0, 0), proc.stdout[-4000:]
    assert proc.returncode == 0
