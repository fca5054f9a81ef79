"""Weights & Biases tracking as a :class:`~benchmark.train.trainer.RunCallback`.

Why a callback and offline by default: the local run store is the record of truth and is
always written; W&B mirrors it (docs/architecture.md §5) without needing an
account. Offline runs land in ``<tracking.wandb.dir>/wandb/offline-run-*`` and are uploaded
later with ``msd wandb sync`` (or ``wandb sync results/wandb/offline-run-*``).

One W&B run per run id: the W&B id is derived from the run id (:func:`wandb_run_id`) and
every attempt calls ``wandb.init(id=…, resume="allow")``, so a resumed run continues the same
W&B run. W&B steps are numbered here, not by W&B, and the next one is kept in the run's
``wandb.json`` (written before each log), so the history of a resumed run goes on where the
killed attempt stopped. Offline, W&B knows nothing of earlier attempts: each attempt writes its
own ``offline-run-<time>-<id>`` directory under the same id, and ``wandb sync`` uploads the
directories of one id one after the other, in start order, into that one run.

What is logged: the resolved config; every ``metrics.jsonl`` record under its MMF key with
``trainer/global_step`` as the step metric; weight distributions (``weight/*_hist`` lists)
as histograms; at the end the first rows of the predictions as a table, the saliency
histogram of the teacher cache, and the lineage (:mod:`benchmark.tracking.wandb_artifacts`):
each run's checkpoint as a ``model`` artifact; a teacher cache as a ``teacher-cache``
artifact logged by a run of job type ``cache`` that uses the teacher's checkpoint; students
use the cache (or, without one, the teacher's checkpoint). W&B then draws
teacher -> cache -> students. Offline, ``use_artifact`` is refused by W&B; the same record
("use after commit" of an artifact rebuilt with the same digest) is written instead and
takes effect when the runs are synced (``msd wandb sync`` syncs teachers, then caches, then
the rest, so producers come first).

A tracking problem must never fail or hang a training run: every W&B call is guarded, the
service is started with short timeouts and no system-stats sampler, and ``finish`` always
runs, with ``exit_code=1`` for a failed run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmark.tracking.atomic import write_json_atomic
from benchmark.tracking.run_store import RunDir

PROJECT = "msd-benchmark"
STEP_METRIC = "trainer/global_step"
WEIGHT_BINS = np.linspace(0.0, 2.0, 21)  # MSD weights live in [0, 2]
SALIENCY_BINS = 40
MODES = ("offline", "online", "disabled")
STATE_FILE = "wandb.json"
LINEAGE_DIR = "msd-lineage"
MAX_ID_LENGTH = 64
_ID_ALLOWED = re.compile(r"[^a-z0-9_-]")
# (init argument, environment variable): the environment wins, as everywhere in W&B.
_ENV_WINS = (("mode", "WANDB_MODE"), ("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY"), ("dir", "WANDB_DIR"))


def wandb_run_id(run_id: str) -> str:
    """The W&B id of a run: the run id itself where W&B allows it (``[a-z0-9_-]``, at most 64),
    else a cleaned prefix and a hash of the original, so two run ids never share a W&B run."""
    cleaned = _ID_ALLOWED.sub("-", run_id.lower())
    if cleaned == run_id and len(cleaned) <= MAX_ID_LENGTH:
        return cleaned
    return f"{cleaned[:MAX_ID_LENGTH - 13]}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class WandbSettings:
    """``tracking.wandb`` as the logger needs it (the environment already applied to ``mode``)."""

    mode: str = "offline"
    project: str = PROJECT
    entity: str | None = None
    dir: str | None = None
    table_rows: int = 100
    artifacts: bool = True
    group: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def init_args(self) -> dict[str, Any]:
        """``wandb.init``'s location arguments, a ``WANDB_*`` variable winning over the config.

        Passed explicitly rather than left to W&B: W&B reads the environment once per process
        (its settings singleton), and a grid worker or a test changes it between runs."""
        args = {"project": self.project, "entity": self.entity, "mode": self.mode, "dir": self.dir}
        for arg, env in _ENV_WINS:
            if os.environ.get(env):
                args[arg] = os.environ[env]
        if args["mode"] == "dryrun":
            args["mode"] = "offline"
        return {k: v for k, v in args.items() if v is not None}

    def root(self) -> Path:
        """The ``wandb/`` directory W&B writes runs to (``WANDB_DIR`` wins, as in W&B)."""
        return Path(os.environ.get("WANDB_DIR") or self.dir or ".").expanduser() / "wandb"


def _settings() -> Any:
    import wandb

    return wandb.Settings(
        x_disable_stats=True,  # no sampler thread to join at exit
        console="off",  # the runner already captures stdout/stderr into log.txt
        init_timeout=60,
        finish_timeout=120,
        quiet=True,
        x_save_requirements=False,
    )


class WandbLogger:
    """Mirror one run into W&B. Construct it, pass it in ``callbacks=``; nothing else."""

    def __init__(
        self,
        *,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        project: str = PROJECT,
        entity: str | None = None,
        mode: str = "offline",
        dir: str | Path | None = None,
        tags: tuple[str, ...] = (),
        table_rows: int = 100,
        artifacts: bool = True,
        resume_by_run_id: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"tracking.wandb.mode must be one of {MODES}, got {mode!r}")
        self.settings = WandbSettings(mode=mode, project=project, entity=entity, dir=str(dir) if dir else None,
                                      table_rows=table_rows, artifacts=artifacts, group=group, tags=tuple(tags))
        self.init_args: dict[str, Any] = {"project": project, "entity": entity, "mode": mode,
                                          "dir": str(dir) if dir else None}
        self.name, self.group, self.job_type, self.tags = name, group, job_type, tuple(tags)
        self.table_rows = table_rows
        self.artifacts = artifacts
        self.run: Any = None
        self.run_dir: RunDir | None = None
        self.config: DictConfig | None = None
        self.resume_by_run_id = resume_by_run_id
        self.wandb_id: str | None = None
        self.state: dict[str, Any] = {}
        self.next_step = 0
        self.last_step = 0

    # -- RunCallback -------------------------------------------------------------------------
    def on_start(self, run: RunDir, config: DictConfig) -> None:
        self.run_dir, self.config = run, config
        try:
            import wandb

            args = self.settings.init_args()
            if args.get("dir"):
                Path(args["dir"]).mkdir(parents=True, exist_ok=True)
            container = OmegaConf.to_container(config, resolve=True)
            assert isinstance(container, dict)
            self.state = self._read_state()
            # Without a run id of the suite's (MMF's own trainer), W&B's random id: a save
            # directory name is no identity.
            identity = {"id": wandb_run_id(run.run_id), "resume": "allow"} if self.resume_by_run_id else {}
            attempt = int((run.read_summary() or {}).get("attempt") or 1)
            self.run = wandb.init(
                **args,
                **identity,
                name=self.name or run.run_id,
                group=self.group,
                job_type=self.job_type,
                tags=list(self.tags),
                config={**container, "run_id": run.run_id},
                reinit="finish_previous",
                settings=_settings(),
            )
            self.run.define_metric(STEP_METRIC)
            self.run.define_metric("*", step_metric=STEP_METRIC)
            self.wandb_id = str(self.run.id)
            self.next_step = max(int(self.state.get("next_step") or 0), int(getattr(self.run, "starting_step", 0) or 0))
            self.state["attempts"] = [*self.state.get("attempts", []),
                                      {"attempt": attempt, "dir": Path(self.run.dir).parent.name}]
            self._write_state()
            self.run.summary["attempt"] = attempt
        except Exception as exc:  # noqa: BLE001 - tracking must not take training down
            self._warn("could not start W&B", exc)
            self.run = None

    def on_log(self, record: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            payload = to_wandb_payload(record)
            payload[STEP_METRIC] = self.last_step = step
            self.run.log(payload, step=self._take_step())
            if record.get("type") == "final":
                self.run.summary.update({k: v for k, v in payload.items() if isinstance(v, (int, float))})
        except Exception as exc:  # noqa: BLE001
            self._warn("could not log to W&B", exc)

    def on_finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        ok = summary.get("status") == "completed"
        try:
            from benchmark.train.cost import flat_cost  # the run's cost figures as cost/... keys

            self.run.summary.update({"status": summary.get("status"), "run_id": summary.get("run_id"),
                                     "wall_time_s": summary.get("wall_time_s"),
                                     "model_params": summary.get("model_params"),
                                     **flat_cost(summary.get("cost"))})
            if summary.get("error"):
                self.run.summary["error"] = str(summary["error"])[:1000]
            if ok:
                self._log_media(summary)
        except Exception as exc:  # noqa: BLE001
            self._warn("could not log the final results to W&B", exc)
        try:
            if ok and self.artifacts:
                self._log_lineage(summary)
        except Exception as exc:  # noqa: BLE001
            self._warn("could not log the artifacts to W&B", exc)
        finally:
            try:
                self.run.finish(exit_code=0 if ok else 1)
            except Exception as exc:  # noqa: BLE001
                self._warn("could not finish the W&B run", exc)
            self.run = None

    # -- steps -------------------------------------------------------------------------------
    def _take_step(self) -> int:
        """The next W&B step, recorded as used *before* it is logged: a run killed in between
        leaves a gap in the steps, never a step logged twice."""
        step = self.next_step
        self.next_step += 1
        self._write_state()
        return step

    def _read_state(self) -> dict[str, Any]:
        assert self.run_dir is not None
        try:
            return json.loads(self.run_dir.file(STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        assert self.run_dir is not None
        self.state.update(id=self.wandb_id, project=getattr(self.run, "project", None), next_step=self.next_step)
        write_json_atomic(self.run_dir.file(STATE_FILE), self.state)

    # -- media and artifacts -----------------------------------------------------------------
    def _log_media(self, summary: dict[str, Any]) -> None:
        import wandb

        run_dir = self.run_dir
        assert run_dir is not None
        predictions = run_dir.file("predictions.parquet")
        if predictions.exists() and self.table_rows > 0:
            frame = run_dir.read_predictions().head(self.table_rows)
            for column in frame.columns:  # arrays (logits) are shown as JSON text
                if frame[column].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
                    frame[column] = frame[column].map(lambda v: json.dumps(np.asarray(v).round(4).tolist()))
            self.run.log({"predictions": wandb.Table(dataframe=frame), STEP_METRIC: self.last_step},
                         step=self._take_step())
        details = summary.get("method_details") or {}
        cache = details.get("teacher_cache")
        if cache and Path(cache).is_dir():
            self._log_saliency(Path(cache), str(details.get("saliency_definition") or "divergence"))

    def _log_lineage(self, summary: dict[str, Any]) -> None:
        """This run's checkpoint as an output; the teacher cache (or teacher) as an input."""
        from benchmark.tracking.wandb_artifacts import ArtifactStager, checkpoint_artifact

        run_dir = self.run_dir
        assert run_dir is not None and self.config is not None
        stager = ArtifactStager(Path(self.run.dir).parent)
        if run_dir.file("checkpoint.pt").exists():
            self.run.log_artifact(checkpoint_artifact(run_dir, stager))
        details = summary.get("method_details") or {}
        cache = details.get("teacher_cache")
        if cache and (Path(cache) / "meta.json").exists():
            from benchmark.tracking.wandb_artifacts import cache_artifact

            log_cache_lineage(self.config, Path(cache), group=self.group, settings=self.settings)
            use_artifact(self.run, cache_artifact(Path(cache), stager))
        elif details.get("teacher_run"):
            teacher = _teacher_run(self.config)
            if teacher is not None:
                use_artifact(self.run, checkpoint_artifact(teacher, stager))

    def _log_saliency(self, cache: Path, definition: str) -> None:
        """Histogram of ``s_image - s_text`` on val: what the MSD weights react to."""
        import wandb

        meta = json.loads((cache / "meta.json").read_text())
        definitions = list(meta.get("saliency_definitions") or [])
        path = cache / "val.saliency.npy"
        if definition not in definitions or not path.exists():
            return
        sal = np.load(path, mmap_mode="r")[:, definitions.index(definition)]
        diff = np.asarray(sal[:, 0] - sal[:, 1], dtype=np.float64)
        diff = diff[np.isfinite(diff)]
        if diff.size:
            self.run.log({f"saliency/{definition}/image_minus_text": wandb.Histogram(diff, num_bins=SALIENCY_BINS),
                          STEP_METRIC: self.last_step}, step=self._take_step())

    def _warn(self, what: str, exc: BaseException) -> None:
        _warn(what, exc)


def _warn(what: str, exc: BaseException) -> None:
    print(f"[wandb] {what}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def use_artifact(run: Any, artifact: Any) -> None:
    """Declare ``artifact`` (a draft rebuilt from the same files) an input of ``run``.

    Online this is ``run.use_artifact``; offline W&B refuses that call, so the record it would
    write ("log, then use after commit") is written directly and replayed by ``wandb sync``.
    The draft has the digest of the version its producer logged, so W&B links that version.
    """
    if run.settings._offline:
        run._log_artifact(artifact, use_after_commit=True, is_user_created=True)
    else:
        run.use_artifact(artifact)


def _teacher_run(config: DictConfig) -> RunDir | None:
    try:
        from benchmark.distill.teacher import resolve_teacher_run

        return resolve_teacher_run(config)
    except Exception:  # noqa: BLE001 - a teacher that moved away only costs the lineage edge
        return None


def log_cache_lineage(config: DictConfig, cache: Path, *, group: str | None = None, name: str | None = None,
                      settings: WandbSettings | None = None) -> str | None:
    """Log a teacher cache once per W&B directory: a run of job type ``cache`` (W&B id
    ``cache-<key>``) that uses the teacher's checkpoint artifact and logs the cache artifact.

    Called by the grid's cache task, and by a student whose cache was not logged yet (a
    standalone ``msd run`` builds its cache inside the student). A marker under
    ``<wandb dir>/msd-lineage/<project>/`` created exclusively first makes concurrent students
    log it once. Returns the W&B id, or None when nothing was logged.
    """
    settings = settings or tracking_settings(config)
    if settings is None or not settings.artifacts:
        return None
    cache = Path(cache)
    if not (cache / "meta.json").exists():
        return None
    wandb_id = wandb_run_id(f"cache-{cache.name}")
    project = os.environ.get("WANDB_PROJECT") or settings.project
    marker = settings.root() / LINEAGE_DIR / project / f"{wandb_id}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    os.close(fd)
    try:
        _log_cache_run(config, cache, wandb_id, group=group or settings.group, name=name, settings=settings)
    except Exception as exc:  # noqa: BLE001 - the marker goes, so a later run tries again
        marker.unlink(missing_ok=True)
        _warn("could not log the teacher cache to W&B", exc)
        return None
    marker.write_text(json.dumps({"id": wandb_id, "cache": str(cache)}) + "\n")
    return wandb_id


def _log_cache_run(config: DictConfig, cache: Path, wandb_id: str, *, group: str | None, name: str | None,
                   settings: WandbSettings) -> None:
    import wandb

    from benchmark.tracking.wandb_artifacts import ArtifactStager, cache_artifact, checkpoint_artifact

    meta = json.loads((cache / "meta.json").read_text())
    inputs = meta.get("inputs") or {}
    args = settings.init_args()
    if args.get("dir"):
        Path(args["dir"]).mkdir(parents=True, exist_ok=True)
    # create_new: a student's own run may still be open in this process.
    run = wandb.init(**args, id=wandb_id, resume="allow", name=name or f"cache/{inputs.get('teacher_run')}",
                     group=group or _default_group(config), job_type="cache",
                     tags=[str(inputs.get("dataset")), "cache"],
                     config={"cache_key": meta.get("key"), **inputs}, reinit="create_new", settings=_settings())
    ok = False
    try:
        stager = ArtifactStager(Path(run.dir).parent)
        teacher = _teacher_run(config)
        if teacher is not None and teacher.run_id == inputs.get("teacher_run") and teacher.file("checkpoint.pt").exists():
            use_artifact(run, checkpoint_artifact(teacher, stager, sha256=inputs.get("teacher_checkpoint_sha256")))
        run.log_artifact(cache_artifact(cache, stager))
        ok = True
    finally:
        run.finish(exit_code=0 if ok else 1)


def to_wandb_payload(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record as W&B values: numbers as they are, ``*_hist`` as histograms."""
    import wandb

    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("type", STEP_METRIC):
            continue
        if key.endswith("_hist") and isinstance(value, (list, tuple)) and len(value) == len(WEIGHT_BINS) - 1:
            out[key] = wandb.Histogram(np_histogram=(np.asarray(value, dtype=np.float64), WEIGHT_BINS))
        elif isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    return out


def resolve_mode(config: DictConfig | None = None) -> str:
    """``WANDB_MODE`` wins; then ``tracking.wandb.mode``; then ``offline``."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return "offline" if env == "dryrun" else env
    node = OmegaConf.select(config, "tracking.wandb", default=None) if config is not None else None
    return str((node or {}).get("mode") or "offline")


def _default_group(config: DictConfig) -> str:
    """A standalone run's group: ``standalone/<dataset>``, so seeds and methods of one dataset
    sit together in W&B's grouped view (the grid and HPO pass their own)."""
    return f"standalone/{config.get('dataset')}"


def tracking_settings(config: DictConfig) -> WandbSettings | None:
    """``tracking.wandb`` of a config, or None when W&B is off (``mode=disabled``, ``enabled: false``)."""
    node = OmegaConf.select(config, "tracking.wandb", default=None)
    node = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(node, dict)
    mode = resolve_mode(config)
    if mode == "disabled" or not node.get("enabled", True):
        return None
    return WandbSettings(
        mode=mode if mode in MODES else "offline", project=str(node.get("project") or PROJECT),
        entity=node.get("entity"), dir=node.get("dir"), table_rows=int(node.get("table_rows", 100)),
        artifacts=bool(node.get("artifacts", True)), group=node.get("group"),
    )


def wandb_callbacks(
    config: DictConfig, *, name: str | None = None, group: str | None = None, job_type: str | None = None
) -> tuple[WandbLogger, ...]:
    """The callbacks for a run: ``()`` when W&B is disabled, else one :class:`WandbLogger`.

    ``msd run``, the grid runner and HPO all call this, so a run is tracked the same way
    whichever command started it. Without a ``group`` (``msd run``) the group is
    ``tracking.wandb.group`` or ``standalone/<dataset>``.
    """
    settings = tracking_settings(config)
    if settings is None:
        return ()
    method = str(config.get("method"))
    if job_type is None:
        job_type = "teacher" if method == "teacher" else "student"
    tags = [str(config.get("dataset")), method]
    if method == "msd":
        tags.append(f"weighting:{OmegaConf.select(config, 'distill.weighting', default=None)}")
    return (
        WandbLogger(
            name=name, group=group or settings.group or _default_group(config), job_type=job_type,
            project=settings.project, entity=settings.entity, mode=settings.mode, dir=settings.dir, tags=tuple(tags),
            table_rows=settings.table_rows, artifacts=settings.artifacts,
        ),
    )


_OFFLINE_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>.+)$")
SYNC_WAVES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("teachers", re.compile(r"-teacher-")),
    ("teacher caches", re.compile(r"^cache-")),
)
"""Which offline runs ``msd wandb sync`` uploads first, by W&B id (ours: the run id, or
``cache-<key>``): producers of artifacts before the runs that use them; the rest last."""


def sync_waves(paths: list[Path]) -> list[tuple[str, list[Path]]]:
    """Offline run directories in lineage order: ``[(what, dirs), ...]``, empty waves left out."""
    waves: list[tuple[str, list[Path]]] = [(name, []) for name, _ in SYNC_WAVES] + [("other runs", [])]
    for path in paths:
        match = _OFFLINE_DIR.match(Path(path).name)
        wandb_id = match.group("id") if match else Path(path).name
        index = next((i for i, (_, pattern) in enumerate(SYNC_WAVES) if pattern.search(wandb_id)), len(SYNC_WAVES))
        waves[index][1].append(Path(path))
    return [(name, dirs) for name, dirs in waves if dirs]
