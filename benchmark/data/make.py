"""``make_dataset``: write an embedded default dataset once, safely (``msd data make``).

Why a wrapper around the generators: a data directory may hold a user's *real* MMF data
(MMF's own default is ``~/.cache/torch/mmf/data``), which a synthetic generator must never
overwrite; and a grid of runs should not regenerate data that is already up to date.

* Every folder a generator writes (``<data_dir>/datasets/<name>/defaults``, and for VQA2 /
  SNLI-VE also ``coco/defaults`` / ``flickr30k/defaults``) gets an ``msd_synthetic.json``
  manifest, written *last*, after the data and the ``.built.json`` markers.
* Same ``(name, size, seed, generator version, options)`` in the manifest and markers in
  place: nothing is written, the stored summary is returned (``"skipped": True``).
* A folder with annotation or feature files but no manifest holds real data: refused with
  :class:`~benchmark.errors.DataError` unless ``force``.
* Otherwise the manifests are first rewritten with ``"state": "writing"`` (the folder stays
  marked as synthetic, so a rerun after a crash is not mistaken for real data) and the
  generator removes the markers before writing, so an interrupted rewrite never looks
  complete; ``"state": "complete"`` is written at the very end.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmark.data.synthetic.writers import BUILT_MARKER, is_built, write_json
from benchmark.errors import DataError
from benchmark.registry import registry

MANIFEST = "msd_synthetic.json"
_DATA_SUBDIRS = ("annotations", "features", "images")


def _manifest_key(name: str, size: int | None, seed: int, version: str, options: dict[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so that tuples/lists and int/float spellings compare equal.
    return json.loads(
        json.dumps({"name": name, "size": size, "seed": seed, "generator_version": version, "options": options}, sort_keys=True)
    )


def read_manifest(root: Path | str) -> dict[str, Any] | None:
    """The manifest of a generator root folder, or None when absent or unreadable."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _has_data(root: Path) -> list[Path]:
    """Data files (not markers) under a root's annotations/features/images folders."""
    found = []
    for sub in _DATA_SUBDIRS:
        folder = root / sub
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name != BUILT_MARKER and not p.name.startswith(".")]
    return found


def _guard_real_data(name: str, roots: list[Path]) -> None:
    for root in roots:
        if read_manifest(root) is not None:
            continue
        found = _has_data(root)
        if found:
            examples = ", ".join(str(p) for p in sorted(found)[:3])
            raise DataError(
                f"{root} holds dataset files ({examples}) but no {MANIFEST}: it looks like a real MMF "
                f"dataset, and generating synthetic {name!r} data there would overwrite it. Use another "
                f"data directory (env.data_dir / MSD_DATA_DIR), or pass force=True (--force) to overwrite."
            )


def _up_to_date(roots: list[Path], key: dict[str, Any], marked: tuple[str, ...]) -> dict[str, Any] | None:
    manifest = read_manifest(roots[0])
    if manifest is None or manifest.get("key") != key:
        return None
    for root in roots:
        owned = read_manifest(root)
        if owned is None or owned.get("key") != key or owned.get("state") != "complete" or not is_built(root, subdirs=marked):
            return None
    summary = manifest.get("summary", {})
    listed = [*summary.get("paths", {}).get("annotations", []), *summary.get("paths", {}).get("features", [])]
    data_dir = roots[0].parents[2]
    if not all((data_dir / rel).exists() for rel in listed):
        return None
    return summary


class _RichTrack:
    """Progress bars for the long writes (features, image copies), on a terminal only."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            transient=True, disable=not sys.stderr.isatty(),
        )

    def __call__(self, iterable: Iterable[Any], total: int, description: str) -> Iterator[Any]:
        task = self.progress.add_task(description, total=total)
        for item in iterable:
            yield item
            self.progress.advance(task)


def make_dataset(
    name: str,
    data_dir: Path | str,
    size: int | None = None,
    seed: int = 0,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Generate dataset ``name`` under ``<data_dir>/datasets/`` unless it is already up to date.

    ``size`` is the number of training samples (questions per split for ``easy_vqa``;
    None = the generator's default), ``options`` override the generator's defaults (its
    mixture, noise, ...). Returns the generation summary (counts per split, mixture,
    paths), with ``"skipped": True`` when nothing had to be written.
    """
    gen = registry.get_generator(name)
    data_dir = Path(data_dir).expanduser().resolve()
    roots = gen.root_dirs(data_dir)
    resolved = gen.resolve_options(options)
    key = _manifest_key(name, size, seed, gen.version, resolved)

    if not force:
        existing = _up_to_date(roots, key, gen.marked_subdirs)
        if existing is not None:
            return {**existing, "skipped": True}
        _guard_real_data(name, roots)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for root in roots:
        write_json(root / MANIFEST, {"owner": name, "key": key, "state": "writing", "started_at": started})

    track = _RichTrack()
    with track.progress:
        summary = gen.generate(data_dir, size=size, seed=seed, track=track, **resolved)
    summary = json.loads(json.dumps(summary))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for root in roots[1:]:
        write_json(root / MANIFEST, {"owner": name, "key": key, "state": "complete", "created_at": now})
    write_json(
        roots[0] / MANIFEST,
        {"owner": name, "key": key, "state": "complete", "created_at": now, "data_dir": str(data_dir), "summary": summary},
    )
    return {**summary, "skipped": False}
