"""Grid files: one YAML describes a whole experiment (base config + axes + rules).

Why a declarative file: the paper's tables are products of a few choices (dataset × method ×
weighting × seed), and writing them out as hundreds of command lines is where mistakes hide.
A grid file names each choice once; :mod:`benchmark.grid.cells` expands it into cells.

Format (``docs/grid.md`` has the full reference)::

    name: table2                    # W&B group; default: the file name
    includes: [other_grid.yaml]     # other grid files merged underneath this one
    base:                           # what every cell starts from (MMF keys, nested or dotted)
      config: my_run.yaml           # optional MMF ``config=`` file, relative to the grid file
      model: late_fusion
      training.batch_size: 64
    axes:                           # the product of these is the grid
      dataset: [hateful_memes, mmimdb]
      method:
        values: [teacher, student_only, kd, msd]
        expand: {msd: {distill.weighting: [uniform, instance]}}   # sub-axis of one value
        overrides: {teacher: {training.max_epochs: 10}}   # per-value overrides
        resources: {teacher: {timeout_min: 240}}          # per-value Slurm resources
      seed: [0, 1, 2]               # alias of training.seed
      distill.temperature: {values: [1, 2], label: tau}   # any dotted key
    include: [{method: kd, distill.temperature: [4]}]      # extra cells (other axes crossed)
    exclude: [{dataset: mmimdb, method: msd}]              # cells dropped
    teachers: {share: [dataset, seed], overrides: {}}      # what a teacher is shared across
    teachers:                       # or several teacher families: students are crossed with them
      families: {vbert: {overrides: {model: visual_bert}}, mmbt: {overrides: {model: mmbt}}}
    resources: {cpus: 1, mem_gb: 4, timeout_min: 120, partition: null}
    data: {size: null, seed: 0}     # arguments of ``msd data make`` for missing datasets
    scales:                         # ``--scale smoke``: replaces axes / adds overrides
      smoke: {axes: {seed: [0]}, overrides: {training.max_epochs: 1}, data: {size: 64}}
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchmark.config.fields import check_fields
from benchmark.config.loader import flatten_dotted, flatten_keys, load_config, load_yaml, move_keys
from benchmark.errors import ConfigError, UserError

AXIS_ALIASES = {"seed": "training.seed"}
# The implicit axis of teacher families (``teachers.families``): a student's value names the
# family it distils from; the key is the config key that wires a student to its teacher.
FAMILY_AXIS = "teacher"
DEFAULT_FAMILY_LABEL = "from"
SELECTOR_KEYS = ("config", "model", "dataset")
# Axes whose value only means something for some methods: a kd cell has no weighting.
DEFAULT_ONLY_FOR = {"distill.weighting": {"method": ["msd"]}}
DEFAULT_TEACHER_SHARE = ("dataset", "model", "seed")
DEFAULT_SCALE = "default"
_TOP_LEVEL = ("name", "description", "base", "axes", "include", "exclude", "teachers", "resources",
              "data", "scales", "labels")
_AXIS_FIELDS = ("values", "expand", "overrides", "resources", "label", "only_for")
_SCALE_FIELDS = ("axes", "overrides", "data", "resources", "include", "exclude", "teachers")
_TEACHER_FIELDS = ("share", "overrides", "resources", "families")
_FAMILY_FIELDS = ("overrides", "resources")
_RESOURCE_FIELDS = ("cpus", "mem_gb", "timeout_min", "partition", "gpus", "slurm")


class GridError(UserError):
    """A grid file is malformed; the message names the file and the offending entry."""


@dataclass(frozen=True)
class Resources:
    """What one cell asks of a scheduler (Slurm); the local launcher uses only ``cpus``."""

    cpus: int = 1
    mem_gb: float = 4.0
    timeout_min: int = 120
    partition: str | None = None
    gpus: int = 0
    slurm: tuple[tuple[str, Any], ...] = ()  # extra sbatch parameters, as sorted pairs (hashable)

    def merged(self, update: dict[str, Any] | None) -> Resources:
        if not update:
            return self
        extra = {**dict(self.slurm), **(update.get("slurm") or {})}
        fields = {k: v for k, v in update.items() if k != "slurm"}
        return replace(self, **fields, slurm=tuple(sorted(extra.items())))


@dataclass(frozen=True)
class Axis:
    """One axis: its values, plus what a particular value changes besides the key itself."""

    key: str
    values: tuple[Any, ...]
    overrides: dict[Any, dict[str, Any]] = field(default_factory=dict)
    expand: dict[Any, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    resources: dict[Any, dict[str, Any]] = field(default_factory=dict)
    label: str | None = None
    only_for: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def config_key(self) -> str:
        return AXIS_ALIASES.get(self.key, self.key)


@dataclass(frozen=True)
class DataSpec:
    size: int | None = None
    seed: int = 0
    generate: bool = True  # false: a missing dataset is an error (a user's real data), never generated


@dataclass(frozen=True)
class TeacherFamily:
    """One kind of teacher (e.g. a BERT-base VisualBERT): overrides and resources of its cells.

    Why families: the paper distils one student from teachers of other architectures, so a
    teacher is not always "the student's model, bigger". Each family's overrides (``model``
    included) apply to its teacher cells only; students are crossed with the families.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def selectors(self) -> dict[str, Any]:
        return {k: v for k, v in self.overrides.items() if k in SELECTOR_KEYS}

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.overrides.items() if k not in SELECTOR_KEYS}


@dataclass
class GridSpec:
    """A parsed grid file with one scale applied; still unexpanded."""

    name: str
    path: Path
    scale: str
    description: str
    base: dict[str, Any]
    axes: list[Axis]
    include: list[dict[str, Any]]
    exclude: list[dict[str, Any]]
    teacher_share: tuple[str, ...]
    teacher_overrides: dict[str, Any]
    teacher_resources: dict[str, Any]
    teacher_families: dict[str, TeacherFamily]
    scale_overrides: dict[str, Any]
    resources: Resources
    data: DataSpec
    labels: dict[str, str]
    scales: tuple[str, ...]

    def axis(self, key: str) -> Axis | None:
        return next((a for a in self.axes if a.key == key), None)

    def sub_axes(self) -> dict[str, Axis]:
        """Axes reachable only through ``expand`` (e.g. ``distill.weighting`` under ``method: msd``)."""
        found: dict[str, Axis] = {}
        for axis in self.axes:
            for subs in axis.expand.values():
                for key, values in subs.items():
                    prior = found.get(key)
                    merged = tuple(dict.fromkeys((*(prior.values if prior else ()), *values)))
                    found[key] = Axis(key=key, values=merged, label=self.labels.get(key))
        return found

    @property
    def group(self) -> str:
        """The W&B group: the grid's name, suffixed with a non-default scale."""
        return self.name if self.scale == DEFAULT_SCALE else f"{self.name}-{self.scale}"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested or dotted grid mappings -> ``{dotted.key: value}``; ``{}`` overrides nothing."""
    return flatten_dotted(node, prefix, drop_empty=True)


def load_grid(path: str | Path, scale: str = DEFAULT_SCALE) -> GridSpec:
    """Parse a grid file (with its ``includes:``) and apply ``scale``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GridError(f"Grid file {path} does not exist (grids live in experiments/*.yaml).")
    try:
        raw = OmegaConf.to_container(load_yaml(path), resolve=False)
    except ConfigError as exc:
        raise GridError(f"Grid file {path}: {exc}") from exc
    assert isinstance(raw, dict)
    where = f"Grid file {path}"
    raw = move_keys(raw, where)  # `weighting` (the old top-level key) -> distill.weighting, with a warning
    _check_fields(raw, _TOP_LEVEL, where)
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict):
        raise GridError(f"{where}: 'scales' must map a scale name to its changes.")
    known_scales = (DEFAULT_SCALE, *[s for s in scales if s != DEFAULT_SCALE])
    if scale not in known_scales:
        raise GridError(f"{where} has no scale {scale!r}{_hint(scale, known_scales)}. Scales: {', '.join(known_scales)}.")
    scaled = scales.get(scale) or {}
    _check_fields(scaled, _SCALE_FIELDS, f"{where}, scales.{scale}")

    labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
    axes_raw = dict(raw.get("axes") or {})
    if FAMILY_AXIS in axes_raw:
        raise GridError(f"{where}: axes.{FAMILY_AXIS}: teachers are not an axis; declare teacher "
                        f"families under teachers.families (students are crossed with them).")
    for key, value in (scaled.get("axes") or {}).items():
        if key not in axes_raw:
            raise GridError(f"{where}: scales.{scale}.axes names {key!r}, which is not an axis{_hint(key, axes_raw)}.")
        axes_raw[key] = _scaled_axis(axes_raw[key], value)
    axes = [_parse_axis(str(k), v, labels, where) for k, v in axes_raw.items()]
    base = _parse_base(raw.get("base") or {}, path, where)
    teachers = _scaled_teachers(raw.get("teachers") or {}, scaled.get("teachers") or {}, scale, where)
    families = _parse_families(teachers.get("families"), f"{where}, teachers.families")
    if families:
        axes.append(Axis(key=FAMILY_AXIS, values=tuple(families),
                         label=labels.get(FAMILY_AXIS, DEFAULT_FAMILY_LABEL)))
    declared = {a.key for a in axes}
    share = _teacher_share(teachers.get("share"), declared, bool(families), where)
    data = {**(raw.get("data") or {}), **(scaled.get("data") or {})}
    _check_fields(data, ("size", "seed", "generate"), f"{where}, data")
    spec = GridSpec(
        name=str(raw.get("name") or path.stem),
        path=path.resolve(),
        scale=scale,
        description=str(raw.get("description") or ""),
        base=base,
        axes=axes,
        include=list(scaled["include"] if "include" in scaled else raw.get("include") or []),
        exclude=list(scaled["exclude"] if "exclude" in scaled else raw.get("exclude") or []),
        teacher_share=share,
        teacher_overrides=flatten(teachers.get("overrides") or {}),
        teacher_resources=_parse_resources(teachers.get("resources"), f"{where}, teachers.resources"),
        teacher_families=families,
        scale_overrides=flatten(scaled.get("overrides") or {}),
        resources=Resources().merged(_parse_resources(raw.get("resources"), f"{where}, resources"))
        .merged(_parse_resources(scaled.get("resources"), f"{where}, scales.{scale}.resources")),
        data=DataSpec(size=data.get("size"), seed=int(data.get("seed") or 0),
                      generate=bool(data.get("generate", True))),
        labels=labels,
        scales=known_scales,
    )
    validate(spec)
    return spec


def _scaled_teachers(teachers: Any, change: Any, scale: str, where: str) -> dict[str, Any]:
    """A scale's ``teachers:`` is merged over the file's: ``overrides``, ``resources`` and each
    family's entries key by key (a smoke scale swaps BERT-base for MiniLM this way)."""
    _check_fields(teachers, _TEACHER_FIELDS, f"{where}, teachers")
    _check_fields(change, _TEACHER_FIELDS, f"{where}, scales.{scale}.teachers")
    merged = dict(teachers)
    if "share" in change:
        merged["share"] = change["share"]
    for key in ("overrides", "resources"):
        if change.get(key):
            merged[key] = {**flatten(teachers.get(key) or {}), **flatten(change[key])}
    if change.get("families"):
        families = dict(teachers.get("families") or {})
        for name, entry in change["families"].items():
            if name not in families:
                raise GridError(f"{where}: scales.{scale}.teachers.families names {name!r}, which is not a "
                                f"family of teachers.families{_hint(name, families)}.")
            families[name] = {
                part: {**flatten((families[name] or {}).get(part) or {}), **flatten((entry or {}).get(part) or {})}
                for part in _FAMILY_FIELDS
            }
        merged["families"] = families
    return merged


def _parse_families(node: Any, where: str) -> dict[str, TeacherFamily]:
    if not node:
        return {}
    if not isinstance(node, dict):
        raise GridError(f"{where} must map a family name to its overrides and resources.")
    families = {}
    for name, entry in node.items():
        entry = entry or {}
        _check_fields(entry, _FAMILY_FIELDS, f"{where}.{name}")
        families[str(name)] = TeacherFamily(
            name=str(name), overrides=flatten(entry.get("overrides") or {}),
            resources=_parse_resources(entry.get("resources"), f"{where}.{name}.resources"),
        )
    return families


def _teacher_share(share: Any, declared: set[str], families: bool, where: str) -> tuple[str, ...]:
    """What one teacher is shared across; with families, the family is the teacher's model."""
    if families and share and "model" in share:
        raise GridError(f"{where}: teachers.share names 'model', but teacher families set the teachers' "
                        f"model (teachers.families.<name>.overrides.model); remove it from share.")
    default = tuple(k for k in DEFAULT_TEACHER_SHARE if not (families and k == "model"))
    chosen = tuple(k for k in (share or default) if k in declared or k in ("dataset", "seed"))
    return (*chosen, FAMILY_AXIS) if families else chosen


def _scaled_axis(original: Any, change: Any) -> Any:
    """A scale may give just new values (a list) and keep the axis's overrides/expand of the
    values it keeps (a smoke scale of one dataset keeps that dataset's overrides)."""
    if isinstance(change, list) and isinstance(original, dict):
        kept = {**original, "values": change}
        for part in ("overrides", "expand", "resources"):
            if isinstance(original.get(part), dict):
                kept[part] = {v: o for v, o in original[part].items() if v in change}
        return kept
    return change


def _parse_base(base: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(base, dict):
        raise GridError(f"{where}: 'base' must be a mapping of config keys.")
    base = dict(base)
    includes = base.pop("includes", None) or []
    merged: dict[str, Any] = {}
    for include in [includes] if isinstance(includes, str) else includes:
        target = Path(str(include)).expanduser()
        target = target if target.is_absolute() else path.parent / target
        try:
            node = OmegaConf.to_container(load_yaml(target), resolve=False)
        except ConfigError as exc:
            raise GridError(f"{where}: base.includes: {exc}") from exc
        merged.update(flatten(node))
    merged.update(flatten(base))
    if merged.get("config"):
        config_file = Path(str(merged["config"])).expanduser()
        merged["config"] = str(config_file if config_file.is_absolute() else (path.parent / config_file).resolve())
    return merged


def _parse_axis(key: str, node: Any, labels: dict[str, str], where: str) -> Axis:
    if isinstance(node, dict):
        _check_fields(node, _AXIS_FIELDS, f"{where}, axes.{key}")
        values = node.get("values")
    else:
        values, node = node, {}
    if not isinstance(values, list) or not values:
        raise GridError(f"{where}: axes.{key} needs a non-empty list of values (got {values!r}).")
    if len(set(map(repr, values))) != len(values):
        raise GridError(f"{where}: axes.{key} lists a value twice: {values}.")
    per_value = {}
    for field_name in ("overrides", "expand", "resources"):
        mapping = node.get(field_name) or {}
        unknown = [v for v in mapping if v not in values]
        if unknown:
            raise GridError(f"{where}: axes.{key}.{field_name} names {unknown}, which are not values of {key} ({values}).")
        per_value[field_name] = mapping
    expand = {
        v: {str(k): tuple(vals if isinstance(vals, list) else [vals]) for k, vals in subs.items()}
        for v, subs in per_value["expand"].items()
    }
    only_for = node.get("only_for", DEFAULT_ONLY_FOR.get(key, {})) or {}
    return Axis(
        key=key,
        values=tuple(values),
        overrides={v: flatten(o) for v, o in per_value["overrides"].items()},
        expand=expand,
        resources={v: _parse_resources(r, f"{where}, axes.{key}.resources.{v}") for v, r in per_value["resources"].items()},
        label=node.get("label") or labels.get(key),
        only_for={str(k): list(v) if isinstance(v, list) else [v] for k, v in only_for.items()},
    )


def _parse_resources(node: Any, where: str) -> dict[str, Any]:
    if not node:
        return {}
    if not isinstance(node, dict):
        raise GridError(f"{where} must be a mapping with keys {', '.join(_RESOURCE_FIELDS)}.")
    _check_fields(node, _RESOURCE_FIELDS, where)
    return dict(node)


def validate(spec: GridSpec) -> None:
    """Axis, include and exclude keys must be config keys: a typo must not silently vanish."""
    where = f"Grid file {spec.path}"
    try:
        known = set(flatten_keys(load_config([f"{k}={v}" for k, v in spec.base.items() if k in SELECTOR_KEYS])))
    except ConfigError as exc:
        raise GridError(f"{where}: base: {exc}") from exc
    valid = known | set(AXIS_ALIASES)
    sub_axes = spec.sub_axes()
    for axis in [*spec.axes, *sub_axes.values()]:
        if axis.config_key not in known and not axis.config_key.startswith("+"):
            raise GridError(f"{where}: unknown axis key {axis.key!r}{_hint(axis.key, valid)}.")
        for cond in axis.only_for:
            if cond not in {a.key for a in spec.axes} | set(sub_axes):
                raise GridError(f"{where}: axes.{axis.key}.only_for names {cond!r}, which is not an axis.")
    axis_keys = {a.key for a in spec.axes} | set(sub_axes)
    for i, rule in enumerate(spec.exclude):
        if not isinstance(rule, dict) or not rule:
            raise GridError(f"{where}: exclude[{i}] must be a non-empty mapping of axis values.")
        for key in rule:
            if key not in axis_keys:
                raise GridError(f"{where}: exclude[{i}] names {key!r}, which is not an axis{_hint(key, axis_keys)}.")
    for i, rule in enumerate(spec.include):
        if not isinstance(rule, dict) or not rule:
            raise GridError(f"{where}: include[{i}] must be a non-empty mapping of keys to values.")
        for key in rule:
            if key not in axis_keys and AXIS_ALIASES.get(key, key) not in known:
                raise GridError(f"{where}: include[{i}] names unknown key {key!r}{_hint(key, valid)}.")
    for key in [*spec.base, *spec.teacher_overrides, *spec.scale_overrides]:
        if key not in known and key not in SELECTOR_KEYS and not key.startswith("+") and not _inside_open_mapping(key, known):
            raise GridError(f"{where}: unknown config key {key!r}{_hint(key, valid)}.")
    for family in spec.teacher_families.values():
        selectors = {**{k: v for k, v in spec.base.items() if k in SELECTOR_KEYS}, **family.selectors()}
        try:
            family_known = set(flatten_keys(load_config([f"{k}={v}" for k, v in selectors.items()])))
        except ConfigError as exc:
            raise GridError(f"{where}: teachers.families.{family.name}: {exc}") from exc
        for key in family.settings():
            if key not in family_known and not key.startswith("+") and not _inside_open_mapping(key, family_known):
                raise GridError(f"{where}: teachers.families.{family.name}: unknown config key "
                                f"{key!r}{_hint(key, family_known)}.")


def _inside_open_mapping(key: str, known: set[str]) -> bool:
    """Keys under a model's or dataset's own node are checked later, against its YAML."""
    return key.startswith(("model_config.", "dataset_config."))


def _check_fields(node: Any, allowed: tuple[str, ...], where: str) -> None:
    check_fields(node, allowed, where, GridError)


def _hint(key: str, candidates: Any) -> str:
    close = difflib.get_close_matches(str(key), sorted(map(str, candidates)), n=3, cutoff=0.5)
    if not close:
        leaf = str(key).rpartition(".")[2]
        close = sorted(c for c in map(str, candidates) if c.endswith("." + leaf))[:3]
    return f" (did you mean {', '.join(close)}?)" if close else ""
