"""Fixtures of the HPO tests: tiny data and one teacher per session, tmp storages per test.

Every trial trains a real student (64 synthetic samples, 2 epochs of 2 updates, validation
after every update so the pruner has something to look at); the teacher and its cache are
shared by the session so each test pays only for its own trials. Helpers are fixtures
because the suite imports test modules with ``--import-mode=importlib``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.train.trainer import run_experiment

REPO = Path(__file__).resolve().parents[2]
STUDENT_BASE = {
    "dataset": "hateful_memes",
    "model": "late_fusion",
    "training.max_epochs": 2,
    "training.batch_size": 32,
    "training.evaluation_interval": 1,
    "training.threads": 1,
    "evaluation.splits": ["val"],
    "distill.cache_spot_check": 1,
    "tracking.wandb.enabled": False,
}


@pytest.fixture(scope="session")
def hpo_world(tmp_path_factory) -> SimpleNamespace:
    """Data (64 samples), a trained teacher and its cache directory, made once."""
    root = tmp_path_factory.mktemp("hpo_world")
    make_dataset("hateful_memes", root / "data", size=64, seed=0)
    config = build_config([
        f"env.data_dir={root / 'data'}", f"env.save_dir={root / 'teachers'}", f"env.cache_dir={root / 'cache'}",
        "dataset=hateful_memes", "method=teacher", "training.max_epochs=1", "training.batch_size=32",
        "training.threads=1", "tracking.wandb.enabled=false",
    ])
    result = run_experiment(config, progress=False)
    assert result.summary["status"] == "completed"
    return SimpleNamespace(root=root, data=root / "data", cache=root / "cache", teacher=result.run_dir.path)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No W&B, and default paths (results/hpo, run store) that can never be the repo's."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MSD_HPO_DIR", str(tmp_path / "hpo"))
    for var, sub in (("MSD_DATA_DIR", "data"), ("MSD_SAVE_DIR", "runs"), ("MSD_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(tmp_path / "default" / sub))


@pytest.fixture
def write_search(hpo_world, tmp_path):
    """``write_search(method="kd", weighting=None, **top_level)`` -> path of a tiny search file."""

    def _write(method: str = "kd", weighting: str | None = None, *, name: str | None = None,
               base: dict[str, Any] | None = None, filename: str | None = None, **top: Any) -> Path:
        merged = {**STUDENT_BASE, "method": method, "env.data_dir": str(hpo_world.data),
                  "env.save_dir": str(tmp_path / "runs"), "env.cache_dir": str(hpo_world.cache), **(base or {})}
        if weighting:
            merged["distill.weighting"] = weighting
        spec: dict[str, Any] = {
            "name": name or f"{method}{'_' + weighting if weighting else ''}_test",
            "base": merged,
            "teacher": str(hpo_world.teacher),
            "space": "default",
            "budget": {"trials": 2},
            "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
            "pruner": "none",
            **top,
        }
        path = tmp_path / (filename or f"{spec['name']}.yaml")
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return _write


@pytest.fixture
def quiet() -> list[str]:
    """A ``log=`` sink that keeps what a search printed, for assertions."""
    return []


# -- a throwaway PostgreSQL server (Debian's postgresql, run as the postgres user) -------------
def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _install_postgres() -> str | None:
    """Install Debian's postgresql when missing; the reason it could not, else None."""
    import shutil
    import subprocess

    if _pg_bin() is not None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL is not installed and apt-get is not usable here (needs root): apt-get install postgresql"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-q", "postgresql"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if command[1] == "install" and done.returncode == 0:
            break
    return None if _pg_bin() is not None else f"apt-get install postgresql failed: {done.stderr[-500:]}"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/db`` of a server started (and stopped)
    here; skipped, with the reason, only when the server truly cannot start."""
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("the PostgreSQL driver is missing: pip install psycopg2-binary")
    reason = _install_postgres()
    if reason:
        pytest.skip(reason)
    bin_dir = _pg_bin()
    as_postgres: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="msd-hpo-pg-"))
    if os.geteuid() == 0:  # initdb and the server refuse to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def pg(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        steps = [
            (str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"),
            (str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"),
            (str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "db"),
        ]
        for step in steps:
            done = pg(*step)
            started = started or step[-1] == "start" and done.returncode == 0
            if done.returncode != 0:
                log = (root / "log").read_text()[-500:] if (root / "log").exists() else ""
                pytest.skip(f"PostgreSQL could not start ({Path(step[0]).name}): {done.stderr[-500:]} {log}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/db"
    finally:
        if started:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
