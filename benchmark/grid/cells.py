"""Expanding a grid spec into cells: resolved configs, run ids, names, teacher wiring.

Why the runner computes the teacher's run id itself: a student's config must say
``teacher=<run id>`` before the teacher has trained, and the run id is a pure function of
the teacher's resolved config (:func:`benchmark.tracking.run_id.compute_run_id`), so every
student of a seed points at the one teacher that will be (or was) trained for it, and a
re-run of the grid finds the same ids, hence skips what is complete.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from benchmark.errors import ConfigError
from benchmark.grid.configs import CORE_AXES, TEACHER, ConfigBuilder, format_arg
from benchmark.grid.spec import FAMILY_AXIS, GridError, GridSpec, Resources
from benchmark.tracking.run_id import compute_run_id

__all__ = ["CORE_AXES", "TEACHER", "Cell", "ExpandedGrid", "cell_name", "expand", "format_arg"]


@dataclass
class Cell:
    """One run of the grid. ``args`` is the MMF command line that reproduces it."""

    name: str
    role: str  # "teacher" | "student"
    values: dict[str, Any]  # axis key -> value (what the name is made of)
    args: tuple[str, ...]
    config: DictConfig
    run_id: str
    resources: Resources
    teacher: str | None = None  # name of the teacher cell it distils from
    needs_cache: bool = False
    aliases: list[str] = field(default_factory=list)  # other names of the same run in this grid

    @property
    def dataset(self) -> str:
        return str(self.config.dataset)

    def command(self) -> str:
        return "msd run " + " ".join(self.args)


@dataclass
class ExpandedGrid:
    spec: GridSpec
    cells: list[Cell]  # teachers first, then students, in expansion order
    extra_args: tuple[str, ...] = ()

    def by_name(self) -> dict[str, Cell]:
        return {c.name: c for c in self.cells}

    def select(self, patterns: str | Sequence[str] | None, *, with_teachers: bool = True) -> list[Cell]:
        """Cells matching any glob (``hateful_memes/*``), plus the teachers they need (to train
        them); ``with_teachers=False`` keeps only the matching cells (to measure them)."""
        if not patterns:
            return list(self.cells)
        pats = [p.strip() for p in (patterns.split(",") if isinstance(patterns, str) else patterns) if p.strip()]
        chosen = {c.name for c in self.cells if any(fnmatch.fnmatchcase(n, p) for n in (c.name, *c.aliases) for p in pats)}
        if not chosen:
            raise GridError(f"--only {','.join(pats)} matches no cell of {self.spec.name}; "
                            f"names look like {self.cells[-1].name if self.cells else '-'}.")
        by_name = self.by_name()
        if with_teachers:
            chosen |= {by_name[n].teacher for n in chosen if by_name[n].teacher}
        return [c for c in self.cells if c.name in chosen]


def expand(spec: GridSpec, extra_args: Iterable[str] = ()) -> ExpandedGrid:
    """All cells of ``spec``; ``extra_args`` (``key=value``) are appended to every cell."""
    extra = tuple(extra_args)
    builder = ConfigBuilder(spec, extra)
    combos = _dedup(_family_where_used(spec, builder, c) for c in [*_product(spec), *_included(spec)]
                    if not _excluded(spec, c))
    teachers: dict[tuple, Cell] = {}
    pending: list[tuple[dict[str, Any], str]] = []
    for combo in combos:
        method = str(combo.get("method", builder.base_value("method")))
        if method == TEACHER:
            _teacher_for(spec, builder, combo, teachers)
        else:
            pending.append((combo, method))
    students = [
        _student(builder, combo, _teacher_for(spec, builder, combo, teachers) if _needs_teacher(method) else None)
        for combo, method in pending
    ]
    cells = _dedup_cells([*teachers.values(), *students])
    if not cells:
        raise GridError(f"Grid file {spec.path} (scale {spec.scale}) expands to no cells: "
                        "check that exclude rules do not remove everything.")
    return ExpandedGrid(spec, cells, extra)


# -- combinations ------------------------------------------------------------------------------
def _product(spec: GridSpec, fixed: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The cartesian product of the axes not fixed, then each value's ``expand`` sub-axes."""
    fixed = fixed or {}
    axes = [a for a in spec.axes if a.key not in fixed]
    combos = []
    for values in itertools.product(*(a.values for a in axes)):
        combos.append({**dict(zip((a.key for a in axes), values)), **fixed})
    expanded: list[dict[str, Any]] = []
    for combo in combos:
        branches = [combo]
        for axis in spec.axes:
            subs = axis.expand.get(combo.get(axis.key), {})
            for key, values in subs.items():
                if key in fixed:
                    continue
                branches = [{**b, key: v} for b in branches for v in values]
        expanded.extend(branches)
    return [_apply_only_for(spec, c) for c in expanded]


def _included(spec: GridSpec) -> list[dict[str, Any]]:
    """Each include entry fixes the keys it names (lists expand) and crosses the other axes."""
    out = []
    for entry in spec.include:
        keys = list(entry)
        lists = [entry[k] if isinstance(entry[k], list) else [entry[k]] for k in keys]
        for values in itertools.product(*lists):
            out.extend(_product(spec, dict(zip(keys, values))))
    return out


def _apply_only_for(spec: GridSpec, combo: dict[str, Any]) -> dict[str, Any]:
    """Drop values of axes that do not apply (``weighting`` of a ``kd`` cell)."""
    scoped = {a.key: a for a in [*spec.axes, *spec.sub_axes().values()] if a.only_for}
    out = dict(combo)
    for key, axis in scoped.items():
        if key in out and not all(out.get(cond, _NOT_SET) in allowed for cond, allowed in axis.only_for.items()):
            del out[key]
    return out


_NOT_SET = object()


def _family_where_used(spec: GridSpec, builder: ConfigBuilder, combo: dict[str, Any]) -> dict[str, Any]:
    """Only teachers and students that distil take a teacher family: one label-only student
    per combination, not one per family."""
    if FAMILY_AXIS not in combo:
        return combo
    method = str(combo.get("method", builder.base_value("method")))
    if method == TEACHER or _needs_teacher(method):
        return combo
    return {k: v for k, v in combo.items() if k != FAMILY_AXIS}


def _excluded(spec: GridSpec, combo: dict[str, Any]) -> bool:
    for rule in spec.exclude:
        if all(combo.get(k, _NOT_SET) in (v if isinstance(v, list) else [v]) for k, v in rule.items()):
            return True
    return False


def _dedup(combos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for combo in combos:
        seen.setdefault(repr(sorted(combo.items(), key=lambda kv: kv[0])), combo)
    return list(seen.values())


def _dedup_cells(cells: list[Cell]) -> list[Cell]:
    """Two names for one config are one run: keep the first name, remember the other."""
    by_id: dict[str, Cell] = {}
    names: dict[str, str] = {}
    for cell in cells:
        if cell.run_id in by_id:
            if cell.name != by_id[cell.run_id].name and cell.name not in by_id[cell.run_id].aliases:
                by_id[cell.run_id].aliases.append(cell.name)
            continue
        if cell.name in names:
            raise GridError(
                f"Two different configs got the same cell name {cell.name!r} ({names[cell.name]} and "
                f"{cell.run_id}); give the axis that differs a label or list it as an axis."
            )
        names[cell.name] = cell.run_id
        by_id[cell.run_id] = cell
    return list(by_id.values())


# -- names -------------------------------------------------------------------------------------
def cell_name(spec: GridSpec, values: dict[str, Any], base: dict[str, Any]) -> str:
    """``hateful_memes/msd-instance-tau2/seed1``: dataset / [model /] method+extras / seed.

    With teacher families a teacher is ``dataset / <family> / teacher / seed`` and a student
    that distils carries its family as an extra: ``hateful_memes/late_fusion/kd-from_mmbt/seed0``.
    """
    get = lambda k: values.get(k, base.get(k))  # noqa: E731
    method = str(get("method"))
    family = values.get(FAMILY_AXIS) if method == TEACHER else None
    label = f"msd-{get('distill.weighting')}" if method == "msd" else method
    declared = [a.key for a in spec.axes] + list(spec.sub_axes())
    extras = [k for k in dict.fromkeys([*declared, *values])
              if k not in CORE_AXES and k in values and not (family is not None and k == FAMILY_AXIS)]
    for key in extras:
        label += "-" + _component(spec, key, values[key])
    parts = [str(get("dataset"))]
    if family is not None:
        parts.append(str(family))
    elif spec.axis("model") is not None:
        parts.append(str(get("model")))
    parts += [label, f"seed{get('seed')}"]
    return "/".join(parts)


def _component(spec: GridSpec, key: str, value: Any) -> str:
    axis = spec.axis(key)
    label = (axis.label if axis else None) or spec.labels.get(key) or key.rpartition(".")[2]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{label}_{value}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{label}{value}"


# -- cells -------------------------------------------------------------------------------------
def _student(builder: ConfigBuilder, values: dict[str, Any], teacher: Cell | None) -> Cell:
    """A student; one that distils gets ``teacher=<run id>``, so its id follows the teacher's."""
    overrides = builder.overrides(values, "student")
    if teacher is not None:
        overrides["teacher"] = teacher.run_id
    args, config = builder.config(values, overrides)
    return Cell(
        name=cell_name(builder.spec, values, builder.defaults()),
        role="student", values=values, args=args, config=config, run_id=compute_run_id(config),
        resources=builder.resources(values, "student"), teacher=teacher.name if teacher else None,
        needs_cache=teacher is not None and str(config.distill.get("teacher_source", "cache")) == "cache",
    )


def _teacher(builder: ConfigBuilder, values: dict[str, Any]) -> Cell:
    args, config = builder.config(values, builder.overrides(values, TEACHER))
    named = {**values, "method": TEACHER}
    return Cell(
        name=cell_name(builder.spec, named, builder.defaults()), role=TEACHER, values=named,
        args=args, config=config, run_id=compute_run_id(config), resources=builder.resources(values, TEACHER),
    )


def _teacher_for(spec: GridSpec, builder: ConfigBuilder, values: dict[str, Any], teachers: dict[tuple, Cell]) -> Cell:
    shared = {k: values[k] for k in spec.teacher_share if k in values}
    key = tuple(sorted(shared.items()))
    if key not in teachers:
        teachers[key] = _teacher(builder, shared)
    return teachers[key]


def _needs_teacher(method: str) -> bool:
    from benchmark.registry import registry

    try:
        return bool(getattr(registry.get_method(method), "needs_teacher", False))
    except ConfigError as exc:
        raise GridError(str(exc)) from exc
