"""Which runs a table may use: the settings a grid file makes at one scale.

Why: a run store collects runs of many origins — the default grid, a ``--scale smoke`` check,
HPO trials, a calibration sweep. Picking "the setting with the most runs" per dataset (the
fallback in :func:`analysis.load.select_setting`) lets a smoke grid or a sweep win whenever it
happens to hold more runs. Instead, the grid that is meant to fill the tables
(``msd analyze --grid experiments/table2.yaml --scale default``) says which settings it
produces, and only runs of those settings enter the tables.

A *setting* (:func:`analysis.load.setting_of`) is everything in a resolved config that is
neither identity (method, weighting, seed, teacher) nor a result-changing variant (``distill.*``,
``views.*``, ...), so the settings of a grid are few — one per (dataset, model size) — and
computing them needs only the configs the grid would build, not its run ids (those hash the
data, which is slow: ~8 s for Table 2's 84 cells against well under a second here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf


@dataclass(frozen=True)
class GridScope:
    """The settings per dataset that some grid files make at one scale."""

    grids: tuple[str, ...]  # grid names, as in their files (``table2``, ``easy_vqa``)
    scale: str
    settings: dict[str, frozenset[str]] = field(default_factory=dict)

    def covers(self, dataset: str) -> bool:
        return dataset in self.settings

    def label(self) -> str:
        """``"table2 + easy_vqa (scale default)"``: the origin named in the tables' notes."""
        return f"{' + '.join(self.grids)} (scale {self.scale})"


def grid_settings(path: str | Path, scale: str) -> tuple[str, dict[str, set[str]]]:
    """The grid's name and, per dataset, the settings its cells have at ``scale``.

    Mirrors :func:`benchmark.grid.cells.expand` (same combinations, same role overrides) but
    builds one config per distinct combination of what a setting depends on (not the seed, not
the variant keys an ablation sweeps), and no run id.
    """
    from analysis.load import IDENTITY_KEYS, _is_variant_key, setting_of
    from benchmark.config.loader import flatten_dotted
    from benchmark.grid import cells as grid_cells
    from benchmark.grid.configs import ConfigBuilder
    from benchmark.grid.spec import SELECTOR_KEYS, load_grid

    spec = load_grid(path, scale)
    builder = ConfigBuilder(spec, ())
    combos = [c for c in [*grid_cells._product(spec), *grid_cells._included(spec)] if not grid_cells._excluded(spec, c)]
    seen: set[tuple] = set()
    out: dict[str, set[str]] = defaultdict(set)
    for combo in combos:
        combo = grid_cells._family_where_used(spec, builder, combo)
        method = str(combo.get("method", builder.base_value("method")))
        roles = ["teacher"] if method == grid_cells.TEACHER else ["student"]
        if method != grid_cells.TEACHER and grid_cells._needs_teacher(method):
            roles.append("teacher")
        for role in roles:
            values = combo if role == "student" else {k: combo[k] for k in spec.teacher_share if k in combo}
            overrides = builder.overrides(values, role)
            # Cells that differ only in identity or variant keys share a setting: build one config.
            dataset = str(values.get("dataset", builder.base_value("dataset")))
            key = (role, tuple(sorted((k, repr(v)) for k, v in values.items() if k in SELECTOR_KEYS)),
                   tuple(sorted((k, repr(v)) for k, v in overrides.items()
                                if k not in IDENTITY_KEYS and not _is_variant_key(k, dataset))))
            if key in seen:
                continue
            seen.add(key)
            _args, config = builder.config(values, overrides)
            flat = flatten_dotted(OmegaConf.to_container(config, resolve=True))
            dataset = str(flat["dataset"])
            out[dataset].add(setting_of(flat, dataset))
    return spec.name, dict(out)


def grid_scope(paths: list[str | Path], scale: str) -> GridScope:
    """The union of the settings of several grid files at one scale (files without that scale
    are skipped: ``--scale smoke`` with a grid that has no smoke scale contributes nothing)."""
    import yaml

    names: list[str] = []
    merged: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        if scale != "default" and scale not in ((yaml.safe_load(Path(path).read_text()) or {}).get("scales") or {}):
            continue
        name, settings = grid_settings(path, scale)
        names.append(name)
        for dataset, values in settings.items():
            merged[dataset] |= values
    return GridScope(tuple(names), scale, {d: frozenset(v) for d, v in merged.items()})
