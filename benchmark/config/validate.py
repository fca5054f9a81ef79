"""Validate a resolved run config before anything is written.

Why a separate pass: the trainer meets most of these values only after it has loaded the
data, started W&B and written a run directory, so a typo cost ~30 s and left a ``failed``
run behind, and a typo in a grid cell failed only after the cells before it had trained.
Every check here needs the config alone (and the run store, to find ``teacher=``); the whole
pass takes milliseconds once the suite is imported (docs/architecture.md §3.4 has the
figure), and ``msd run``, ``msd cache build``, ``msd grid run`` (every cell, before any data
is made or any cell trains) and HPO (trials, and the search's configs before its teacher
trains) call :func:`validate_config` first.

Checks are small named functions in :data:`CHECKS` (``@check``), not an if/else chain;
value ranges are one table, :data:`VALUE_RULES`; a test keeps it in step with
``defaults.yaml``. Every problem found is reported at once, one paragraph each, in one
:class:`ConfigValidationError`. Where the trainer already enforces a rule (device,
precision, run type, distributed mode), the check calls the trainer's own function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.errors import ConfigError, UserError


class ConfigValidationError(ConfigError):
    """One or more problems of a run config, each one paragraph (``failures``)."""

    def __init__(self, failures: list[str], where: str = "", what: str = "the config") -> None:
        self.failures = failures
        self.where = where
        self.what = what
        head = f"{where}: " if where else ""
        if len(failures) == 1:
            message = head + failures[0]
        else:
            message = f"{head}{len(failures)} problems in {what}:\n" + "\n".join(f"- {f}" for f in failures)
        super().__init__(message)

    def __reduce__(self) -> tuple:  # pickles whole (a worker process may hand it back)
        return (type(self), (self.failures, self.where, self.what))


# -- the value table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What one key may hold: a type, an optional interval, or a fixed set of choices."""

    key: str
    kind: str  # "int" | "number" | "bool" | "str"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value instead of low <= value
    high_open: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    meaning: str = ""

    def describe(self) -> str:
        """``a number > 0``, ``an integer >= 1 (or null)``, ``one of best, last``."""
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        else:
            text = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string"}[self.kind]
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {_num(self.low)}"
            elif self.high is not None:
                text += f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return text + (" (or null)" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """One paragraph on why ``value`` breaks the rule, or None."""
        if self.choices:
            if value is None and self.nullable:
                return None
            if isinstance(value, str) and value in self.choices:
                return None
            if isinstance(value, bool) and str(value).lower() in self.choices:
                return None  # YAML's true for a choice spelled "true" (training.pin_memory)
            from benchmark.models.options import invalid_choice

            return invalid_choice(self.key, value, self.choices)
        if not self._fits(value):
            meaning = f" ({self.meaning})" if self.meaning else ""
            kind = "" if value is None else f" ({type(value).__name__})"
            return f"{self.key}{meaning} must be {self.describe()}, got {value!r}{kind}. Set {self.key}=<value>."
        return None

    def _fits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def positive(key: str, meaning: str = "", *, nullable: bool = False) -> Rule:
    return Rule(key, "number", low=0, low_open=True, nullable=nullable, meaning=meaning)


def at_least(key: str, low: int, meaning: str = "", *, nullable: bool = False) -> Rule:
    return Rule(key, "int", low=low, nullable=nullable, meaning=meaning)


def non_negative(key: str, meaning: str = "", *, nullable: bool = False) -> Rule:
    return Rule(key, "number", low=0, nullable=nullable, meaning=meaning)


def fraction(key: str, meaning: str = "") -> Rule:
    """A share of something that must leave a remainder: [0, 1)."""
    return Rule(key, "number", low=0, high=1, high_open=True, meaning=meaning)


def unit(key: str, meaning: str = "") -> Rule:
    return Rule(key, "number", low=0, high=1, meaning=meaning)


def flag(key: str) -> Rule:
    return Rule(key, "bool")


def one_of(key: str, *choices: str, meaning: str = "") -> Rule:
    return Rule(key, "str", choices=tuple(choices), meaning=meaning)


def _hold_out_modes() -> tuple[str, ...]:
    from benchmark.data.build import HOLD_OUT_MODES

    return tuple(HOLD_OUT_MODES)


def _amp_dtypes() -> tuple[str, ...]:
    from benchmark.train.precision import AMP_DTYPES

    return tuple(AMP_DTYPES)


def _distributed_modes() -> tuple[str, ...]:
    from benchmark.train.distributed import DISTRIBUTED_MODES

    return tuple(DISTRIBUTED_MODES)


# Every typed key of defaults.yaml (tests/core/test_validate.py checks that each leaf of the
# sections in RULED_SECTIONS is here or in FREE_KEYS). Registry-backed names (method, distill.weighting,
# optimizer.type, ...) are in REGISTRY_CHOICES below; keys with a check of their own are in
# CHECKED_BY_NAME.
VALUE_RULES: tuple[Rule, ...] = (
    at_least("training.seed", 0, "the random seed"),
    at_least("training.max_epochs", 1, "epochs to train", nullable=True),
    at_least("training.max_updates", 1, "updates to train", nullable=True),
    at_least("training.batch_size", 1, "the global batch"),
    at_least("training.update_frequency", 1, "batches per update (gradient accumulation)"),
    flag("training.fp16"),
    positive("training.distributed_timeout_min", "the collective timeout"),
    flag("training.find_unused_parameters"),
    at_least("training.num_workers", 0, "data-loader workers"),
    one_of("training.pin_memory", "auto", "true", "false"),
    one_of("training.in_memory", "auto", "true", "false"),
    positive("training.in_memory_max_mb", "the largest split kept in memory by in_memory=auto, in MiB"),
    flag("training.in_memory_store"),
    flag("training.compile"),
    non_negative("training.clip_grad_norm", "the gradient-norm clip; 0 or null = none", nullable=True),
    at_least("training.evaluation_interval", 1, "updates between evaluations", nullable=True),
    at_least("training.log_interval", 1, "updates between train logs"),
    at_least("training.threads", 1, "torch threads", nullable=True),
    flag("training.deterministic"),
    flag("training.early_stop.enabled"),
    Rule("training.early_stop.criteria", "str", nullable=True),
    flag("training.early_stop.minimize"),
    at_least("training.early_stop.patience", 0, "evaluations without improvement"),
    flag("training.fail_on_nan"),
    positive("optimizer.params.lr", "the learning rate"),
    non_negative("optimizer.params.weight_decay"),
    positive("optimizer.params.eps"),
    flag("optimizer.params.fused"),
    fraction("scheduler.params.warmup_ratio", "the share of updates spent warming up"),
    at_least("scheduler.params.num_warmup_steps", 0, "warm-up updates", nullable=True),
    flag("evaluation.predictions"),
    flag("evaluation.predict"),
    fraction("data.meta_split.fraction", "the held-out share of train"),
    at_least("data.meta_split.seed", 0),
    unit("distill.alpha", "the weight of the KD term"),
    positive("distill.temperature", "the distillation temperature tau"),
    non_negative("views.teacher_loss", "the weight of the teacher's single-modality label losses"),
    one_of("distill.class_reduction", "mean", "sum"),
    one_of("distill.teacher_source", "cache", "live"),
    at_least("distill.cache_spot_check", 0, "samples re-run through the teacher"),
    positive("distill.weighting_params.temperature", "T_w of the instance scheme"),
    one_of("distill.weighting_params.parameterisation", "mlp", "global"),
    at_least("distill.weighting_params.hidden", 1),
    positive("distill.weighting_params.meta_lr"),
    positive("distill.weighting_params.inner_lr"),
    at_least("distill.weighting_params.every", 1, "training steps per meta step"),
    one_of("checkpoint.rule", "best", "last"),
    flag("checkpoint.resume"),
)

# Rules whose choices live in another module (one list, not two).
LAZY_RULES: tuple[Callable[[], Rule], ...] = (
    lambda: one_of("data.meta_split.hold_out", *_hold_out_modes()),
    lambda: one_of("training.amp_dtype", *_amp_dtypes()),
    lambda: one_of("training.distributed", *_distributed_modes()),
)

# config key -> registry kind: the value must be a registered name.
REGISTRY_CHOICES: dict[str, str] = {
    "dataset": "dataset",
    "model": "model",
    "method": "method",
    "distill.weighting": "weighting",
    "distill.saliency": "saliency",
    "optimizer.type": "optimizer",
    "scheduler.type": "scheduler",
}

# Keys a dedicated check below covers (most through the function the trainer itself calls).
CHECKED_BY_NAME = ("run_type", "training.device", "views.removal", "model_size", "evaluation.splits",
                   "evaluation.views", "teacher", "checkpoint.resume_file", "evaluation.cost.enabled",
                   "evaluation.cost.repeats", "evaluation.cost.warmup", "evaluation.cost.batch_sizes")

# Leaves of defaults.yaml that take any value of their type (names, paths, metric lists).
FREE_KEYS = ("evaluation.metrics", "recipes.lr.teacher", "recipes.lr.student", "recipes.lr.paper_base")

# The sections whose every leaf must be in one of the lists above (tested).
RULED_SECTIONS = ("training", "optimizer", "scheduler", "evaluation", "data", "views", "distill", "checkpoint")


# -- the checks -------------------------------------------------------------------------------------
@dataclass
class ValidationContext:
    """What a check may know besides the config.

    ``planned_teachers`` maps run ids that a grid will train before its students (run id ->
    resolved config) to their configs: a student's ``teacher=`` may name one that does not
    exist yet, and is then checked against its config instead of the run store.
    """

    planned_teachers: Mapping[str, DictConfig] = field(default_factory=dict)
    # (model, size, removal, model node) -> built model config or error: a grid's cells share a
    # few models, and building one costs ~15 ms of OmegaConf merging
    built_models: dict[str, DictConfig | ConfigError] = field(default_factory=dict)
    _plain: dict[int, tuple[DictConfig, dict[str, Any]]] = field(default_factory=dict)

    def plain(self, config: DictConfig) -> dict[str, Any]:
        """The sections the checks read, as plain Python (converted once per config: reading
        through OmegaConf costs ~50x more, and a grid validates hundreds of cells)."""
        if id(config) not in self._plain:
            model = config.get("model")
            sections = {k: config.get(k) for k in (*{r.key.split(".")[0] for r in VALUE_RULES}, *REGISTRY_CHOICES,
                                                   "data", "views")}
            sections["model_config"] = {model: (config.get("model_config") or {}).get(model)}
            tree = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                    for k, v in sections.items()}
            self._plain[id(config)] = (config, tree)  # the config is kept so that its id stays unique
        return self._plain[id(config)][1]

    def model_config(self, config: DictConfig, role: str = "auto") -> DictConfig:
        """``benchmark.models.build.model_config``, memoised on what it reads."""
        import json

        from benchmark.models.build import model_config, resolve_size

        tree = self.plain(config)
        name = tree.get("model")
        key = json.dumps([name, resolve_size(config, role), (tree.get("views") or {}).get("removal"),
                          tree["model_config"].get(name)], sort_keys=True, default=str)
        if key not in self.built_models:
            try:
                self.built_models[key] = model_config(config, role)
            except ConfigError as exc:
                self.built_models[key] = exc
        result = self.built_models[key]
        if isinstance(result, ConfigError):
            raise result
        return result


CheckFn = Callable[[DictConfig, ValidationContext], Iterable[str]]


@dataclass(frozen=True)
class Check:
    name: str
    fn: CheckFn
    after: tuple[str, ...]  # checks that must have passed (e.g. the teacher needs a known method)
    doc: str


CHECKS: dict[str, Check] = {}


def check(name: str, *, after: tuple[str, ...] = ()) -> Callable[[CheckFn], CheckFn]:
    """Register a check; it yields one paragraph per problem (or raises a ConfigError)."""

    def decorator(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"validation check {name!r} is already registered")
        if not set(after) <= set(CHECKS):  # checks run in registration order
            raise ValueError(f"validation check {name!r} must be registered after {sorted(set(after) - set(CHECKS))}")
        CHECKS[name] = Check(name, fn, after, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return decorator


def _select(tree: Any, key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key in a plain tree (OmegaConf.select is ~50x slower)."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


@check("values")
def check_values(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """Types and ranges of VALUE_RULES (lr > 0, max_epochs >= 1, alpha in [0, 1], ...)."""
    tree = ctx.plain(config)
    for rule in (*VALUE_RULES, *(make() for make in LAZY_RULES)):
        present, value = _select(tree, rule.key)
        if not present:
            continue  # an old or trimmed config: the trainer's default applies
        problem = rule.problem(value)
        if problem:
            yield problem


@check("cost")
def check_cost(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """evaluation.cost: known options, repeats >= 1, warmup >= 0, batch sizes >= 1 (the trainer's own reader)."""
    from benchmark.train.cost import cost_settings

    node = ctx.plain(config).get("evaluation") or {}
    try:
        cost_settings(node.get("cost"))
    except ConfigError as exc:
        yield str(exc)


@check("stopping", after=("values",))
def check_stopping(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """A training run stops: max_epochs or max_updates is set."""
    t = config.training
    if t.get("max_epochs") is None and not t.get("max_updates"):
        yield ("training.max_epochs and training.max_updates are both null, so training would never stop; "
               "set training.max_epochs=<epochs> or training.max_updates=<updates>.")


@check("choices")
def check_choices(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """Registered names: dataset, model, method, weighting, saliency, optimizer and scheduler types."""
    from benchmark.models.options import invalid_choice
    from benchmark.registry import registry

    tree = ctx.plain(config)
    for key, kind in REGISTRY_CHOICES.items():
        present, value = _select(tree, key)
        if not present:
            continue
        known = registry.names(kind)
        if str(value) not in known:
            yield (invalid_choice(key, value, known)
                   + f" A new {kind} is a class decorated with @registry.register_{kind}(<name>).")


@check("views")
def check_views(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """The view removal rule and the evaluated views."""
    from benchmark import VIEWS
    from benchmark.models.options import invalid_choice
    from benchmark.models.views import removal_mode

    try:
        removal_mode(OmegaConf.create({"removal": config.views.get("removal")}), f"model_config.{config.model}")
    except ConfigError as exc:
        yield str(exc)
    views = config.evaluation.get("views") or ()
    if isinstance(views, str):
        yield f"evaluation.views must be a list of views (e.g. \"evaluation.views=['multi','image']\"), got {views!r}."
        return
    for view in views:
        if view not in VIEWS:
            yield invalid_choice("evaluation.views", view, VIEWS)


@check("splits", after=("choices",))
def check_splits(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """dataset_config.<dataset> exists and names every split of evaluation.splits."""
    from benchmark.config.loader import dataset_node

    node = dataset_node(config)
    annotations = node.get("annotations") or {}
    splits = config.evaluation.get("splits") or ()
    if isinstance(splits, str):
        yield f"evaluation.splits must be a list of splits (e.g. \"evaluation.splits=['val','test']\"), got {splits!r}."
        return
    for split in splits:
        if split not in annotations:
            yield (f"evaluation.splits names {split!r}, which dataset_config.{config.dataset}.annotations does not "
                   f"define (it has {', '.join(map(str, annotations)) or 'none'}).")


@check("run_type")
def check_run_type(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """run_type is one of MMF's (the trainer's parse_run_type)."""
    from benchmark.train.run_types import parse_run_type

    parse_run_type(config)
    return ()


@check("host", after=("values",))
def check_host(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """This machine can run it: device, precision, distributed mode (the trainer's own functions)."""
    from benchmark.train.batching import resolve_device
    from benchmark.train.distributed import launch_mode
    from benchmark.train.precision import build_precision

    t = config.training
    device = resolve_device(str(t.device))
    build_precision(bool(t.fp16), str(t.amp_dtype), device)
    launch_mode(str(t.distributed))
    return ()


@check("distributed", after=("choices", "host"))
def check_distributed(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """Under a multi-process launcher: a global batch for every rank, a method that can train under DDP."""
    from benchmark.registry import registry
    from benchmark.train.distributed import launch_mode

    world = launch_mode(str(config.training.distributed))
    if world <= 1:
        return
    batch = int(config.training.batch_size)
    if batch < world:  # the split sizes, the other half of the trainer's rule, need the data
        yield (f"A world of {world} ranks is larger than the data of one update: the global batch "
               f"training.batch_size={batch} has fewer samples than ranks. Every rank needs at least one sample of "
               "each batch; launch fewer processes or raise training.batch_size.")
    refusal = registry.get_method(str(config.method)).distributed_refusal(config)
    if refusal:
        yield refusal


@check("model", after=("choices",))
def check_model(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """model_config.<model> exists and has a preset for this run's model_size."""
    ctx.model_config(config)
    return ()


@check("resume_file")
def check_resume_file(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """checkpoint.resume_file, when set, is a file."""
    ref = config.checkpoint.get("resume_file")
    if ref and not Path(str(ref)).expanduser().is_file():
        yield f"checkpoint.resume_file={ref}: no such file. Name a checkpoint.pt or last.pt, or remove the key."


@check("teacher", after=("choices", "run_type"))
def check_teacher(config: DictConfig, ctx: ValidationContext) -> Iterable[str]:
    """teacher= of a distilling method: present, unique, complete, a teacher, same dataset and view rule, buildable."""
    from benchmark.registry import registry
    from benchmark.train.run_types import parse_run_type

    if not getattr(registry.get_method(str(config.method)), "needs_teacher", False):
        return
    if not parse_run_type(config).train:
        return  # scoring a trained student's checkpoint needs no teacher
    ref = config.get("teacher")
    if not ref:
        yield (f"method={config.method} distils from a teacher: pass teacher=<run id, unique id prefix or run "
               f"directory> (train one with `msd run dataset={config.dataset} model={config.model} method=teacher`).")
        return
    planned = ctx.planned_teachers.get(str(ref))
    if planned is not None:
        yield from _teacher_problems(config, str(ref), planned, None, ctx)
        return
    from benchmark.tracking.run_store import RunStore

    try:
        run = RunStore(config.env.save_dir).find(str(ref))
    except UserError as exc:
        yield f"teacher={ref}: {exc}"
        return
    summary = run.read_summary() or {}
    where = f"Teacher run {run.run_id} ({run.path})"
    if summary.get("status") != "completed":
        yield (f"{where} is not complete (status: {summary.get('status', 'none')}); finish it (`msd run` with its "
               "config resumes it) or name another teacher.")
        return
    try:
        teacher_config = run.read_config()
    except Exception as exc:  # a missing or damaged config.yaml
        yield f"{where} has no readable config.yaml ({type(exc).__name__}: {exc}); retrain it."
        return
    yield from _teacher_problems(config, run.run_id, teacher_config, summary, ctx)
    from benchmark.train.checkpoint import BEST

    if not run.file(BEST).exists():
        yield f"{where} has no {BEST}; retrain it."


def _teacher_problems(config: DictConfig, run_id: str, teacher: DictConfig, summary: dict | None,
                      ctx: ValidationContext) -> Iterable[str]:
    from benchmark.registry import registry

    method = str(teacher.get("method"))
    try:
        role = getattr(registry.get_method(method), "role", None)
    except ConfigError:
        role = None
    if role != "teacher":
        yield (f"teacher={run_id} is not a teacher: that run was trained with method={method} "
               f"({'a student' if role == 'student' else 'not a teacher method'}). teacher= must name a run "
               f"trained with method=teacher on {config.dataset}; `msd runs list` shows them.")
        return
    dataset = (summary or {}).get("dataset") or teacher.get("dataset")
    if str(dataset) != str(config.dataset):
        yield (f"teacher={run_id} was trained on {dataset!r}, but this run is on {config.dataset!r}; name a teacher "
               f"of {config.dataset}.")
        return
    from benchmark.distill.teacher import views_mismatch

    mismatch = views_mismatch(config, teacher)
    if mismatch:
        yield f"teacher={run_id}: {mismatch}"
    try:
        built = ctx.model_config(teacher, role="teacher")
    except ConfigError as exc:
        yield f"teacher={run_id}: its model cannot be built from its stored config: {exc}"
        return
    stored = (summary or {}).get("model_description") or {}
    for key in ("name", "size"):
        if key in stored and str(stored[key]) != str(built.get(key)):
            yield (f"teacher={run_id}: its checkpoint holds a {stored.get('name')} of size {stored.get('size')}, "
                   f"but its stored config now builds a {built.get('name')} of size {built.get('size')}; the "
                   "checkpoint would not load. Retrain the teacher with this version of the suite.")
            return


# Checks about the hardware and launcher of the machine that validates: a grid submitted to
# Slurm from a login node without GPUs skips them (its cells run, and check, elsewhere).
HOST_CHECKS = ("host", "distributed")


# -- running them -----------------------------------------------------------------------------------
def validate_config(config: DictConfig, *, context: ValidationContext | None = None, skip: Iterable[str] = (),
                    where: str = "") -> None:
    """Run every check (except ``skip``); raise one ConfigValidationError listing all problems.

    A check whose prerequisites (``after``) failed is not run: an unknown method has no
    teacher rule to apply, and one paragraph about the method is clearer than two.
    """
    ctx = context or ValidationContext()
    failures: list[str] = []
    failed: set[str] = set()
    skipped = set(skip)
    for check_ in CHECKS.values():
        if check_.name in skipped:
            continue
        if failed.intersection(check_.after):
            failed.add(check_.name)
            continue
        try:
            problems = list(check_.fn(config, ctx))
        except UserError as exc:
            problems = [str(exc)]
        if problems:
            failed.add(check_.name)
            failures.extend(problems)
    if failures:
        raise ConfigValidationError(failures, where)
