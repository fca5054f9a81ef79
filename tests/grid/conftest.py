"""Fixtures and helpers of the grid tests: every file they write lives under a tmp directory.

``finished_smoke`` runs ``experiments/smoke.yaml`` once per session (in-process runner,
forked workers, real training on 64 synthetic samples); the idempotency, status and W&B
tests read what it left behind. Helpers are handed to tests as fixtures (the suite imports
test modules with ``--import-mode=importlib``, so a helper module could not be imported).

The W&B reader parses ``run-*.wandb`` files directly (W&B's LevelDB-style record log of
protobuf ``Record`` messages): wandb 0.31 no longer ships a Python ``DataStore``, and the
point of the test is to read what an offline run really wrote to disk.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from benchmark.grid.runner import GridReport, run_grid

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def env_args(root: Path) -> list[str]:
    """Overrides that keep every file of a grid run under ``root``."""
    return [f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'runs'}", f"env.cache_dir={root / 'cache'}"]


def write_grid(path: Path, **spec: Any) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tiny_grid(path: Path, methods: list[str], *, name: str = "tiny", **extra: Any) -> Path:
    """One dataset, one seed, tiny data, one epoch; ``methods`` like ``[teacher, kd]``."""
    base = {"model": "late_fusion", "training.max_epochs": 1, "training.batch_size": 32,
            "distill.cache_spot_check": 1, **extra.pop("base", {})}
    axes = {"dataset": ["hateful_memes"], "method": {"values": methods}, "seed": [0]}
    if "msd" in methods:
        axes["method"]["expand"] = {"msd": {"distill.weighting": ["instance"]}}
    return write_grid(path, name=name, base=base, axes=axes, data={"size": 64}, **extra)


def wandb_records(path: Path) -> Iterator[Any]:
    """Every protobuf Record of one offline ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos:pos + length], pos + length
        if kind in (FIRST, FULL):
            parts = chunk
        elif kind in (MIDDLE, LAST):
            parts += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Group, job type, name, config, history rows and exit code of one offline run."""
    out: dict[str, Any] = {"history": [], "artifacts": [], "exit_code": None}
    (run_file,) = sorted(Path(run_dir).glob("run-*.wandb"))
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type,
                       name=record.run.display_name, project=record.run.project, dir=Path(run_dir),
                       config={i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                path = list(item.nested_key) or [item.key]  # media: ("weight/image_hist", "_type")
                node = row
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "artifact":
            art = record.artifact
            out["artifacts"].append({
                "name": art.name, "type": art.type, "digest": art.digest, "used": art.use_after_commit,
                "refs": [e.ref for e in art.manifest.contents],
                "entries": {e.path: {"ref": e.ref, "digest": e.digest, "local_path": e.local_path, "size": e.size,
                                     "extra": {x.key: json.loads(x.value_json) for x in e.extra}}
                            for e in art.manifest.contents},
            })
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def offline_runs(wandb_dir: Path, settle_s: float = 10.0) -> list[dict[str, Any]]:
    """Every offline run under ``wandb_dir``. W&B's service may still be flushing the record log
    of a run that just finished, so a run without its exit record is read again for a few seconds."""
    paths = sorted((Path(wandb_dir) / "wandb").glob("offline-run-*"))
    deadline = time.monotonic() + settle_s
    runs = [read_offline_run(p) for p in paths]
    while any(r["exit_code"] is None for r in runs) and time.monotonic() < deadline:
        time.sleep(0.2)
        runs = [read_offline_run(p) for p in paths]
    return runs


@pytest.fixture(scope="session")
def grid_tools() -> SimpleNamespace:
    return SimpleNamespace(env_args=env_args, write_grid=write_grid, tiny_grid=tiny_grid,
                           offline_runs=offline_runs, read_offline_run=read_offline_run, repo=REPO, smoke=SMOKE)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """W&B offline into tmp, and default run-store paths that can never be the repo's."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("MSD_DATA_DIR", "data"), ("MSD_SAVE_DIR", "runs"), ("MSD_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / "default" / sub))


@pytest.fixture(scope="session")
def finished_smoke(tmp_path_factory) -> tuple[Path, GridReport]:
    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(root / "wandb"))
        mp.setenv("WANDB_SILENT", "true")
        report = run_grid(SMOKE, extra_args=env_args(root), workers=2)
    return root, report
