"""W&B artifacts of the run store: a run's checkpoint (``model``) and a teacher cache.

Why not ``file://`` references: a run is usually trained on one machine and synced (``wandb
sync``) or viewed from another, where a path like ``/scratch/u/results/runs/…`` means nothing.
So an artifact holds

* the **small files** themselves (``config.yaml``, a summary of the results, a cache's
  ``meta.json`` with its chunk checksums), staged inside the offline run's own directory so
  that copying ``wandb/`` to the machine that syncs carries them along;
* **large files** (a checkpoint over ``tracking.wandb.upload_max_mb``, every cache array) as
  references with a stable, machine-independent name and their checksum:
  ``msd://runs/<run id>/checkpoint.pt`` (resolved under ``env.save_dir``) with its sha256, and
  ``msd://cache/teacher/<key>/<file>`` (under ``env.cache_dir``) whose digest is the xxh3 of
  the cache's own per-chunk checksums, which ``meta.json`` (uploaded) lists in full.

The same inputs always give the same manifest, hence the same W&B digest: a student that
*uses* its teacher cache rebuilds the artifact locally and W&B matches it, by digest, to the
version the cache run logged. That is how lineage is recorded in offline mode, where W&B's
``use_artifact`` by name needs a server (:mod:`benchmark.tracking.wandb_logger`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import xxhash
from omegaconf import OmegaConf

from benchmark.distill.fingerprint import sha256_file
from benchmark.tracking.run_store import RunDir

SCHEME = "msd"
MODEL_TYPE = "model"
CACHE_TYPE = "teacher-cache"
STAGE_DIR = "msd-artifacts"
CHECKPOINT = "checkpoint.pt"
DEFAULT_UPLOAD_MAX_MB = 50.0

STABLE_SUMMARY_KEYS = (
    "run_id", "dataset", "model", "method", "weighting", "seed", "teacher", "metrics", "headline",
    "headline_metric", "best_step", "best_value", "updates", "epochs_started", "stopped_early", "finished_at",
    "git_commit", "checkpoint_rule",
)
"""What of ``summary.json`` goes into a model artifact: the fields fixed once a run completed.
Later additions (the HPO trials that reused the run, a cache's saliency check) would change
the artifact's digest and split one checkpoint into several versions."""


def checkpoint_artifact_name(run_id: str) -> str:
    return f"checkpoint-{run_id}"


def cache_artifact_name(cache_dir: Path) -> str:
    return f"teacher-cache-{Path(cache_dir).name}"


def run_reference(run_id: str, name: str) -> str:
    """Where a run-store file lives, independent of the machine: resolve under ``env.save_dir``."""
    return f"{SCHEME}://runs/{run_id}/{name}"


def cache_reference(cache_dir: Path, name: str) -> str:
    """Where a cache file lives, independent of the machine: resolve under ``env.cache_dir``."""
    return f"{SCHEME}://cache/teacher/{Path(cache_dir).name}/{name}"


def resolve_reference(uri: str, save_dir: str | Path, cache_dir: str | Path) -> Path:
    """The local path of an ``msd://`` reference in this machine's run store or cache."""
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        raise ValueError(f"not an {prefix} reference: {uri!r}")
    area, _, rest = uri[len(prefix):].partition("/")
    roots = {"runs": Path(save_dir), "cache": Path(cache_dir)}
    if area not in roots:
        raise ValueError(f"unknown area {area!r} in {uri!r} (expected runs/ or cache/)")
    return roots[area] / rest


class ArtifactStager:
    """Copies (hard-links where it can) small files into the W&B run's directory.

    W&B records an uploaded file by its local path and reads it when the run is synced, which
    may be long after the run store moved on (a rebuilt cache, a rewritten summary): the staged
    copy is the content at logging time, and it travels with the offline run directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def stage(self, artifact_name: str, name: str, source: Path | None = None, text: str | None = None) -> Path:
        target = self.root / STAGE_DIR / artifact_name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        if text is not None:
            target.write_text(text)
            return target
        assert source is not None
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        return target


def _reference_entry(path: str, ref: str, digest: str, size: int, extra: dict[str, Any]) -> Any:
    from wandb.sdk.artifacts.artifact_manifest_entry import ArtifactManifestEntry

    return ArtifactManifestEntry(path=path, ref=ref, digest=digest, size=size, extra=extra)


def upload_max_bytes(run: RunDir) -> int:
    """The run's own ``tracking.wandb.upload_max_mb``: whoever rebuilds its artifact later (a
    cache run, a student) makes the same upload-or-reference choice, hence the same digest."""
    try:
        value = OmegaConf.select(run.read_config(), "tracking.wandb.upload_max_mb", default=None)
    except (OSError, ValueError):
        value = None
    return int(float(DEFAULT_UPLOAD_MAX_MB if value is None else value) * (1 << 20))


def checkpoint_artifact(run: RunDir, stager: ArtifactStager, sha256: str | None = None) -> Any:
    """The run's ``checkpoint.pt`` with its config and results: type ``model``."""
    import wandb

    name = checkpoint_artifact_name(run.run_id)
    summary = run.read_summary() or {}
    stable = {k: summary[k] for k in STABLE_SUMMARY_KEYS if k in summary}
    checkpoint = run.file(CHECKPOINT)
    size = checkpoint.stat().st_size
    # Not "run_id" in the metadata: analysis links a run id to the W&B run whose record log names
    # it so, and a cache run using this artifact is not the teacher's W&B run.
    metadata = {("source_run" if k == "run_id" else k): v for k, v in stable.items()}
    art = wandb.Artifact(name, type=MODEL_TYPE, metadata={**metadata, "checkpoint_bytes": size})
    art.add_file(str(stager.stage(name, "config.yaml", run.file("config.yaml"))), name="config.yaml",
                 policy="immutable")
    art.add_file(str(stager.stage(name, "summary.json", text=json.dumps(stable, indent=2, sort_keys=True, default=str))),
                 name="summary.json", policy="immutable")
    if size <= upload_max_bytes(run):
        art.add_file(str(stager.stage(name, CHECKPOINT, checkpoint)), name=CHECKPOINT, policy="immutable")
    else:
        digest = sha256 or sha256_file(checkpoint)
        art.manifest.add_entry(_reference_entry(CHECKPOINT, run_reference(run.run_id, CHECKPOINT), digest, size,
                                                {"sha256": digest}))
    return art


def cache_artifact(cache_dir: Path, stager: ArtifactStager) -> Any:
    """A teacher cache: ``meta.json`` uploaded, each array a reference named by its chunk checksums."""
    import wandb

    cache_dir = Path(cache_dir)
    meta_path = cache_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    inputs = meta.get("inputs") or {}
    name = cache_artifact_name(cache_dir)
    art = wandb.Artifact(name, type=CACHE_TYPE, metadata={
        "key": meta.get("key"), "teacher_run": inputs.get("teacher_run"), "dataset": inputs.get("dataset"),
        "teacher_checkpoint_sha256": inputs.get("teacher_checkpoint_sha256"),
        "saliency_definitions": meta.get("saliency_definitions"), "shapes": meta.get("shapes"),
        "teacher_recheck": meta.get("teacher_recheck"),
    })
    art.add_file(str(stager.stage(name, "meta.json", meta_path)), name="meta.json", policy="immutable")
    for split, kinds in sorted((meta.get("arrays") or {}).items()):
        for kind, spec in sorted(kinds.items()):
            file_name = str(spec["file"])
            checksums = [str(c) for c in spec.get("checksums") or []]
            digest = xxhash.xxh3_128_hexdigest("\n".join(checksums).encode())
            size = (cache_dir / file_name).stat().st_size if (cache_dir / file_name).exists() else 0
            art.manifest.add_entry(_reference_entry(
                file_name, cache_reference(cache_dir, file_name), digest, size,
                {"chunk_hash": spec.get("hash"), "chunks": len(checksums), "chunk_rows": spec.get("chunk_rows"),
                 "checksums_digest": f"xxh3_128 of the chunk checksums listed in meta.json arrays.{split}.{kind}"},
            ))
    return art
