"""MMF-style configuration: ``includes:``, layered YAMLs and ``key=value`` overrides.

The merge order is defaults < ``models/<model>.yaml`` < ``datasets/<dataset>.yaml`` <
``config=<file>`` < command-line overrides, as in MMF, so a user's MMF habits carry over:
``msd run config=exp.yaml dataset=mmimdb training.seed=1``.

Command-line overrides are strict: a key that does not exist fails with the nearest valid
keys (a typo must never silently start a 20-minute run with the default). Adding a new key
on purpose uses Hydra's ``+key=value``. YAML files may add keys freely.
"""

from __future__ import annotations

import ast
import difflib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.errors import ConfigError

# Keys that moved to their MMF-style home (old spelling -> key). The old spelling still works
# everywhere a key is written (command line, YAML files, grid axes, HPO spaces) and warns once
# per place; run ids hash the key at its old place (benchmark/tracking/run_id.py), so moving a
# key never renames a run.
MOVED_KEYS: dict[str, str] = {"weighting": "distill.weighting"}


class MovedKeyWarning(FutureWarning):
    """A config key was written under its old name (shown by default, unlike DeprecationWarning)."""


def warn_moved(old: str, where: str) -> None:
    new = MOVED_KEYS[old]
    warnings.warn(f"{where}: config key {old!r} is deprecated; write {new!r} instead (same values, "
                  f"same run ids).", MovedKeyWarning, stacklevel=3)


def canonical_key(key: str, where: str = "command line") -> str:
    """``weighting`` -> ``distill.weighting`` (with a warning); any other key unchanged."""
    plus = "+" if key.startswith("+") else ""
    bare = key.lstrip("+")
    if bare not in MOVED_KEYS:
        return key
    warn_moved(bare, where)
    return plus + MOVED_KEYS[bare]


def canonical_arg(arg: str, where: str = "command line") -> str:
    """``weighting=instance`` -> ``distill.weighting=instance``; other arguments unchanged."""
    key, sep, raw = arg.partition("=")
    return f"{canonical_key(key.strip(), where)}{sep}{raw}" if sep else arg


def move_keys(tree: Any, where: str, parent: str = "") -> Any:
    """A plain tree (a grid or search file) with every mapping key ``weighting`` renamed
    ``distill.weighting``, at any depth except directly under ``distill`` (already its home).

    A mapping that then holds both spellings with different values is an error that names
    both; the same value twice is accepted. One warning per file.
    """
    found: list[str] = []

    def walk(node: Any, parent_key: str, path: str) -> Any:
        if isinstance(node, list):
            return [walk(v, "", f"{path}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, Mapping):
            return node
        out: dict[Any, Any] = {}
        moved: list[tuple[str, str, Any]] = []
        for key, value in node.items():
            value = walk(value, str(key), f"{path}.{key}" if path else str(key))
            new = MOVED_KEYS.get(str(key)) if parent_key != "distill" else None
            if new is None:
                out[key] = value
            else:
                moved.append((str(key), new, value))
        for key, new, value in moved:
            found.append(f"{path}.{key}" if path else key)
            present = _lookup(out, new)
            if present is not _ABSENT and present != value:
                _conflict(where, path, new_key=new, new=present, old_key=key, old=value)
            if present is _ABSENT:
                out[new] = value
        return out

    moved = walk(tree, parent, "")
    if found:
        old = sorted({f.rpartition(".")[2] for f in found})
        for name in old:
            warnings.warn(f"{where}: config key {name!r} is deprecated (at {', '.join(found)}); write "
                          f"{MOVED_KEYS[name]!r} instead (same values, same run ids).", MovedKeyWarning, stacklevel=2)
    return moved


def _lookup(mapping: Mapping, dotted: str) -> Any:
    """``mapping[dotted]``, written dotted or nested; ``_ABSENT`` when it is neither."""
    if dotted in mapping:
        return mapping[dotted]
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _conflict(where: str, path: str, *, new_key: str, new: Any, old_key: str, old: Any) -> None:
    at = f" under {path}" if path else ""
    raise ConfigError(f"{where}: both {new_key}={new!r} and its deprecated spelling {old_key}={old!r} are "
                      f"set{at}; keep only {new_key}.")


def _move_yaml_keys(node: DictConfig, path: Path) -> None:
    """A YAML run config written with an old top-level key: the value moves to its new home."""
    for old, new in MOVED_KEYS.items():
        if old not in node:
            continue
        value = node.pop(old)
        present = OmegaConf.select(node, new, default=_ABSENT)
        if present is not _ABSENT and present != value:
            _conflict(f"Config file {path}", "", new_key=new, new=present, old_key=old, old=value)
        OmegaConf.update(node, new, value, merge=True, force_add=True)
        warn_moved(old, f"Config file {path}")


_ABSENT = object()


def weighting_of(config: Any) -> str:
    """The MSD weighting scheme of a config (``distill.weighting``), or of a plain tree stored
    before the key moved (top-level ``weighting``); ``none`` when neither is set."""
    value = (config.get("distill") or {}).get("weighting")
    if value is None:
        value = config.get("weighting")
    return "none" if value is None else str(value)


def upgrade_stored_config(node: DictConfig) -> DictConfig:
    """A run's stored config.yaml from before a key moved, in today's layout (no warning: the
    user wrote nothing; the run id is unchanged, see ``HASHED_AT_OLD_PLACE`` in run_id.py)."""
    for old, new in MOVED_KEYS.items():
        if old in node:
            value = node.pop(old)
            if OmegaConf.select(node, new, default=_ABSENT) is _ABSENT:
                OmegaConf.update(node, new, value, merge=True, force_add=True)
    return node

CONFIG_ROOT = Path(__file__).resolve().parent
DEFAULTS_FILE = CONFIG_ROOT / "defaults.yaml"
_SELECTORS = ("config", "model", "dataset")


@dataclass
class ParsedArgs:
    """The MMF command line split into its parts."""

    config: str | None = None
    model: str | None = None
    dataset: str | None = None
    overrides: list[tuple[str, Any, bool]] = field(default_factory=list)  # (key, value, is_new)


def parse_value(text: str) -> Any:
    """``literal_eval`` like MMF, falling back to the raw string (``model=late_fusion``)."""
    lowered = text.strip()
    if lowered in ("null", "None", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        return text


def parse_args(args: Sequence[str]) -> ParsedArgs:
    parsed = ParsedArgs()
    for arg in args:
        if "=" not in arg:
            raise ConfigError(
                f"Argument {arg!r} is not of the form key=value. Use MMF's grammar: "
                "config=<yaml> model=<name> dataset=<name> some.key=value"
            )
        key, _, raw = arg.partition("=")
        key = key.strip()
        is_new = key.startswith("+")
        key = key.lstrip("+")
        if not key:
            raise ConfigError(f"Argument {arg!r} has an empty key.")
        if key in _SELECTORS and not is_new:
            setattr(parsed, key, raw.strip())
        else:
            parsed.overrides.append((key, parse_value(raw), is_new))
    return parsed


def load_yaml(path: str | Path, _stack: tuple[Path, ...] = ()) -> DictConfig:
    """Load a YAML file and merge its ``includes:`` (depth first, before its own keys)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    resolved = path.resolve()
    if resolved in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, resolved))
        raise ConfigError(f"Circular includes: {chain}")
    try:
        node = OmegaConf.load(resolved)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise ConfigError(f"Cannot parse config file {path}: {exc}") from exc
    if not isinstance(node, DictConfig):
        raise ConfigError(f"Config file {path} must hold a mapping at top level.")
    _move_yaml_keys(node, path)
    includes = node.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged = OmegaConf.create()
    for include in includes:
        merged = OmegaConf.merge(merged, load_yaml(_resolve_include(str(include), resolved), (*_stack, resolved)))
    return OmegaConf.merge(merged, node)


def _resolve_include(include: str, including_file: Path) -> Path:
    """Package config root first (MMF resolves against its own root), then the including file."""
    candidate = Path(include).expanduser()
    if candidate.is_absolute():
        return candidate
    for base in (CONFIG_ROOT, including_file.parent, Path.cwd()):
        if (base / candidate).is_file():
            return base / candidate
    raise ConfigError(
        f"Cannot find include {include!r} from {including_file}: looked under {CONFIG_ROOT} "
        f"and {including_file.parent}."
    )


def _component_file(kind: str, name: str) -> Path | None:
    path = CONFIG_ROOT / f"{kind}s" / f"{name}.yaml"
    return path if path.is_file() else None


def _available(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / f"{kind}s").glob("*.yaml"))


def load_config(args: Sequence[str] = (), extra_overrides: Iterable[str] = ()) -> DictConfig:
    """Build the fully merged (not yet resolved) run config from an MMF command line."""
    parsed = parse_args([*args, *extra_overrides])
    parsed.overrides = _moved_overrides(parsed.overrides)
    config = load_yaml(DEFAULTS_FILE)
    user_file = load_yaml(parsed.config) if parsed.config else OmegaConf.create()

    for kind in ("model", "dataset"):
        name = getattr(parsed, kind) or user_file.get(kind) or config.get(kind)
        component = _component_file(kind, str(name))
        if component is None:
            close = difflib.get_close_matches(str(name), _available(kind), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"Unknown {kind} {name!r}.{hint} Available: {', '.join(_available(kind))}. "
                f"A new {kind} needs benchmark/config/{kind}s/<name>.yaml and a registered class."
            )
        config = OmegaConf.merge(config, load_yaml(component))
        config[kind] = str(name)

    config = OmegaConf.merge(config, user_file)
    for kind in ("model", "dataset"):
        if getattr(parsed, kind):
            config[kind] = getattr(parsed, kind)
    if parsed.config:
        config.config_file = str(Path(parsed.config).expanduser().resolve())

    known = set(flatten_keys(config))
    for key, value, is_new in parsed.overrides:
        if not is_new and key not in known and not _is_inside_known_leaf_container(config, key):
            raise ConfigError(_unknown_key_message(key, known))
        OmegaConf.update(config, key, value, merge=True, force_add=True)
    return config


def _moved_overrides(overrides: list[tuple[str, Any, bool]]) -> list[tuple[str, Any, bool]]:
    """Old key names on the command line -> their new home; both with different values is an error."""
    given = {key.lstrip("+"): value for key, value, _ in overrides}
    out = []
    for key, value, is_new in overrides:
        bare = key.lstrip("+")
        if bare in MOVED_KEYS:
            new = MOVED_KEYS[bare]
            if new in given and given[new] != value:
                _conflict("Command line", "", new_key=new, new=given[new], old_key=bare, old=value)
            warn_moved(bare, "Command line")
            key = new
        out.append((key, value, is_new))
    return out


def _is_inside_known_leaf_container(config: DictConfig, key: str) -> bool:
    """``a.b=1`` is fine when ``a`` is an existing empty/open mapping meant to be filled
    (e.g. ``distill.weighting_params``) — but only for mappings that are declared empty."""
    parent, _, _ = key.rpartition(".")
    if not parent:
        return False
    node = OmegaConf.select(config, parent, default=None)
    return isinstance(node, DictConfig) and len(node) == 0


def _unknown_key_message(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
    if not close:
        leaf = key.rpartition(".")[2]
        close = sorted(k for k in known if k.endswith("." + leaf) or k == leaf)[:3]
    hint = f" Closest valid keys: {', '.join(close)}." if close else ""
    return (
        f"Unknown config key {key!r}.{hint} Check the spelling, list the keys with "
        f"`msd config show`, or write +{key}=... to add a new key on purpose."
    )


def flatten_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (containers and leaves), without resolving values."""
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for k in node:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            keys.append(dotted)
            child = node._get_node(k)
            if isinstance(child, (DictConfig, ListConfig)):
                keys.extend(flatten_keys(child, dotted))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            dotted = f"{prefix}.{i}"
            keys.append(dotted)
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                keys.extend(flatten_keys(child, dotted))
    return keys


def flatten_dotted(node: Any, prefix: str = "", *, drop_empty: bool = False) -> dict[str, Any]:
    """Nested (or already dotted) mappings -> ``{dotted.key: leaf}``; lists are leaves.

    An empty mapping is a leaf ``{}`` (a config's open mapping), or dropped with
    ``drop_empty`` (a grid's ``overrides: {}`` means "nothing to override").
    """
    if not isinstance(node, Mapping):
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_dotted(value, dotted, drop_empty=drop_empty))
        elif not (drop_empty and isinstance(value, Mapping)):
            out[dotted] = value
    return out


def size_preset(config: Any) -> str:
    """The model-size preset of a run: ``model_size``, or by role when it is ``auto``."""
    size = config.get("model_size", "auto") or "auto"
    if size != "auto":
        return str(size)
    return "teacher" if config.get("method") == "teacher" else "student"


def _per_size(key: str, *, _root_: DictConfig) -> Any:
    """Resolver ``${msd.per_size:recipes.lr}``: the entry of a per-size mapping for this run.

    Why a resolver and not a merge: the recipe must follow the run's *final* method and
    model_size (after every YAML and command-line override), and every path that builds a
    config (``msd run``, the grid's fast builder, HPO) meets at resolution.
    """
    table = OmegaConf.select(_root_, key, default=None)
    if not isinstance(table, DictConfig):
        raise ConfigError(f"${{msd.per_size:{key}}}: {key} must be a mapping of model size -> value")
    size = size_preset(_root_)
    if size not in table:
        raise ConfigError(f"{key} has no entry for model size {size!r}; known: {', '.join(map(str, table))}. "
                          f"Add one with +{key}.{size}=...")
    return table[size]


OmegaConf.register_resolver("msd.per_size", _per_size, replace=True)


ROLES = ("teacher", "student")


def _per_role(key: str, *, _root_: DictConfig) -> Any:
    """Resolver ``${msd.per_role:dataset_config.hateful_memes.recipe.patience}``: the entry of a
    ``{teacher, student}`` mapping for this run's role (``method=teacher`` or any student).

    Why by role and not by size: a dataset's recipe says how its students train, whatever
    their size (the efficiency grid's ``tiny`` and ``small`` students included), and a
    per-size table would have to name every preset.
    """
    table = OmegaConf.select(_root_, key, default=None)
    if not isinstance(table, DictConfig) or set(map(str, table)) != set(ROLES):
        found = OmegaConf.to_container(table) if isinstance(table, DictConfig) else table
        raise ConfigError(f"${{msd.per_role:{key}}}: {key} must be a mapping with exactly the keys "
                          f"{' and '.join(ROLES)}, got {found!r}")
    return table["teacher" if _root_.get("method") == "teacher" else "student"]


OmegaConf.register_resolver("msd.per_role", _per_role, replace=True)


def _for_model(model: str, value: Any, otherwise: Any, *, _root_: DictConfig) -> Any:
    """Resolver ``${msd.for_model:late_fusion,1.0e-2,${msd.per_size:recipes.lr}}``: ``value`` for
    runs of ``model``, ``otherwise`` for every other family.

    Why: a dataset's recipe calibrated on one family (MM-IMDB's late-fusion students) must
    not be forced on the others, whose size recipe stays; and a resolver leaves nothing but
    the chosen value in the resolved config, so the calibrated family's run ids do not move.
    """
    if _component_file("model", str(model)) is None:  # a typo would silently give every family `otherwise`
        raise ConfigError(f"${{msd.for_model:{model},...}}: unknown model {model!r}; known: {', '.join(_available('model'))}")
    return value if str(_root_.get("model")) == str(model) else otherwise


OmegaConf.register_resolver("msd.for_model", _for_model, replace=True)


def resolve(config: DictConfig) -> DictConfig:
    """Resolve interpolations and normalise the env and data paths; fail clearly on bad ones."""
    return resolve_tree(OmegaConf.to_container(config, resolve=False))


def resolve_tree(tree: Any) -> DictConfig:
    """:func:`resolve` from a plain (unresolved) tree, e.g. one the grid built without OmegaConf."""
    config = OmegaConf.create(tree)
    try:
        OmegaConf.resolve(config)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Cannot resolve config interpolation: {exc}") from exc
    for key in ("data_dir", "save_dir", "cache_dir"):
        value = config.env.get(key)
        if value:
            config.env[key] = normalise_path(str(value), resolve_links=key == "data_dir")
    for node in (config.get("dataset_config") or {}).values():
        if isinstance(node, DictConfig) and node.get("data_dir"):
            node.data_dir = normalise_path(str(node.data_dir), resolve_links=True)
    return config


def normalise_path(value: str, *, resolve_links: bool) -> str:
    """One spelling per directory: ``~`` expanded, no trailing or doubled slash, and for data
    (``resolve_links``) absolute with symlinks resolved, so that every way of naming the same
    data builds the same config. Run and cache directories keep a relative path relative."""
    path = os.path.expanduser(value)
    return os.path.realpath(path) if resolve_links else os.path.normpath(path)


def build_config(args: Sequence[str] = (), extra_overrides: Iterable[str] = ()) -> DictConfig:
    """The resolved run config for an MMF command line (what ``msd run`` trains with)."""
    return resolve(load_config(args, extra_overrides))


def dataset_node(config: DictConfig) -> DictConfig:
    """``dataset_config.<dataset>``, with an error that says which YAML to fix."""
    node = config.dataset_config.get(config.dataset)
    if node is None:
        raise ConfigError(
            f"dataset_config.{config.dataset} is missing: benchmark/config/datasets/"
            f"{config.dataset}.yaml must define it."
        )
    return node
