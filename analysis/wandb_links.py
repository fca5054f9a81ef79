"""Which W&B run mirrors which run-store run, from the W&B directories on disk.

The W&B logger (``benchmark.tracking.wandb_logger``) puts the run-store id into the W&B
config and summary (``run_id``), but W&B names its directories by its own random id
(``offline-run-<time>-<wandb id>``, ``run-<time>-<wandb id>`` when online). Each directory's
``run-*.wandb`` record log is scanned for ``run_id`` followed by a quoted run-store id — a
byte search, so no protobuf parsing and no W&B import is needed. Online runs link to their
web page when its URL appears in the directory's logs; offline ones link to the directory
(upload with ``msd wandb sync``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUN_ID = re.compile(rb'run_id[^"]{0,8}"([A-Za-z0-9_.\-]+)"')
URL = re.compile(rb'https://[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+/runs/([A-Za-z0-9_\-]+)')
# ``offline-run-<date>_<time>-<id>`` / ``run-<date>_<time>-<id>``; the suite's W&B ids (the run
# ids) contain '-' and '_'.
RUN_DIR = re.compile(r"^(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<id>.+)$")


@dataclass(frozen=True)
class WandbRun:
    path: Path
    wandb_id: str
    offline: bool
    url: str | None


def wandb_roots(extra: list[str | Path] | None = None) -> list[Path]:
    """Candidate W&B directories: given ones, ``$WANDB_DIR``, then ``tracking.wandb.dir``."""
    roots: list[Path] = [Path(p) for p in (extra or [])]
    if os.environ.get("WANDB_DIR"):
        roots.append(Path(os.environ["WANDB_DIR"]))
    try:
        from benchmark.config.loader import build_config

        configured = build_config([]).tracking.wandb.dir
        if configured:
            roots.append(Path(str(configured)))
    except Exception:  # noqa: BLE001 - the report still works without W&B links
        pass
    return list(dict.fromkeys(roots))


def find_wandb_runs(roots: list[Path]) -> dict[str, WandbRun]:
    """``{run-store id: WandbRun}``; the most recent W&B directory wins for a re-run."""
    found: dict[str, WandbRun] = {}
    dirs: list[Path] = []
    for root in roots:
        for base in (root, root / "wandb"):
            if base.is_dir():
                dirs += [p for p in base.iterdir() if p.is_dir() and p.name.startswith(("offline-run-", "run-"))]
    for directory in sorted(set(dirs), key=lambda p: (_dir_part(p, "time"), p.name)):  # "-1" after its first
        files = sorted(directory.glob("run-*.wandb"))
        if not files:
            continue
        data = files[0].read_bytes()
        ids = {m.group(1).decode() for m in RUN_ID.finditer(data)}
        # The record file is named after the W&B id; the directory is not always: W&B appends
        # "-1" when a resumed run starts within the same second as its first attempt.
        wandb_id = files[0].stem.removeprefix("run-") or _dir_part(directory, "id")
        offline = directory.name.startswith("offline-run-")
        url = None if offline else _url(directory, data, wandb_id)
        for run_id in ids:
            found[run_id] = WandbRun(directory, wandb_id, offline, url)
    return found


def _dir_part(directory: Path, part: str) -> str:
    match = RUN_DIR.match(directory.name)
    return match.group(part) if match else directory.name


def _url(directory: Path, data: bytes, wandb_id: str) -> str | None:
    sources = [data] + [p.read_bytes() for p in sorted((directory / "logs").glob("*.log"))]
    for source in sources:
        for match in URL.finditer(source):
            if match.group(1).decode() == wandb_id:
                return match.group(0).decode()
    return None
