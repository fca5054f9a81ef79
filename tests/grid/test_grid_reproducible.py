"""Runs that do not depend on how the grid ran them (docs/reproducibility.md): the number of
workers, the start method and the machine's cores must not change a single bit."""

from __future__ import annotations

import json
import os
import platform

import pytest
import torch

from benchmark.grid.local import LocalLauncher
from benchmark.grid.runner import run_grid
from benchmark.numerics import PINNED, SWITCH, pin_cpu_numerics


def test_pinning_sets_only_what_the_user_left_unset():
    env = {"MKL_CBWR": "COMPATIBLE"}
    assert pin_cpu_numerics(env, machine="x86_64") == {**PINNED, "MKL_CBWR": "COMPATIBLE"}
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "COMPATIBLE"


@pytest.mark.parametrize(("env", "machine"), [({SWITCH: "native"}, "x86_64"), ({}, "aarch64"), ({}, "arm64")])
def test_pinning_is_off_when_asked_or_not_on_x86(env, machine):
    assert pin_cpu_numerics(env, machine=machine) == {} and not set(PINNED) & set(env)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or os.environ.get(SWITCH) == "native",
                    reason="the pinning applies to x86-64 and can be turned off")
def test_the_package_pins_before_torch_picks_its_kernels():
    # benchmark/__init__ ran before torch was imported by this test module's imports
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT", "NO AVX")  # never AVX512 when pinned


@pytest.mark.parametrize("cores", [1, 2, 16])
@pytest.mark.parametrize("workers", [None, 1, 2, 8])
def test_threads_never_follow_the_cores_or_the_workers(monkeypatch, cores, workers):
    monkeypatch.setattr("benchmark.grid.local.cpu_count", lambda: cores)
    resolved_workers, threads = LocalLauncher._resolve(workers, None)
    assert threads == 1
    assert resolved_workers == (workers or cores)
    assert LocalLauncher._resolve(workers, 3)[1] == 3  # --threads is the user's choice, recorded in the run


def _runs(root):
    out = {}
    for summary_file in sorted((root / "runs").glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        state = torch.load(summary_file.parent / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        out[summary_file.parent.name] = (summary, state)
    return out


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_one_cell_is_bit_identical_under_other_workers_and_start_methods(tmp_path, grid_tools):
    """1 worker started by exec vs 2 workers forked: the same run ids, metrics and weights to the bit
    (before, 1 worker on 2 cores meant 2 torch threads, which changes float sums)."""
    grid = grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher", "student_only"])
    for name, workers, start in (("a", 1, "exec"), ("b", 2, "forkserver")):
        report = run_grid(grid, extra_args=grid_tools.env_args(tmp_path / name), workers=workers, start=start)
        assert report.exit_code == 0, [(t, s.error) for t, s in report.states.items() if s.error]
    a, b = _runs(tmp_path / "a"), _runs(tmp_path / "b")
    assert set(a) == set(b) and len(a) == 2
    for run_id, (summary, state) in a.items():
        other_summary, other_state = b[run_id]
        assert summary["metrics"] == other_summary["metrics"] and summary["headline"] == other_summary["headline"]
        assert summary["environment"]["intra_op_threads"] == other_summary["environment"]["intra_op_threads"] == "1"
        assert all(torch.equal(state[k], other_state[k]) for k in state)
