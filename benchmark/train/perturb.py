"""Test-time perturbations of evaluation batches (robustness, docs/robustness.md).

A perturbation corrupts one modality of an evaluation batch at a *level* (a noise sigma, a
token-dropout rate), after the data pipeline and before the model, at evaluation only:
training never sees one. Each kind is one class registered here (``@register_perturbation``);
``get_perturbation(name, level)`` refuses an unknown name or a level out of range with one
clear message.

Determinism, and why per sample: every random draw comes from a generator seeded by
``(seed, perturbation name, sample_index)``, never by batch position, so a sample is
perturbed identically whatever the evaluation batch size. Teacher and students (whose eval
batches differ) therefore see exactly the same corrupted inputs, which makes their curves a
paired comparison. The draw does not depend on the level either (common random numbers):
``image_noise`` adds ``level * std * z`` with the same ``z`` at every sigma, and
``text_dropout`` drops a token when its uniform draw is below the rate, so a higher rate
drops a superset of the tokens a lower one dropped. The curve then moves with the level
only, not with a new draw at each point. Level 0 returns the batch unchanged (bit-identical).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.errors import ConfigError

SPEC_FILE = Path(__file__).resolve().parents[1] / "config" / "robustness.yaml"
_PERTURBATIONS: dict[str, type[Perturbation]] = {}


def register_perturbation(name: str) -> Callable[[type[Perturbation]], type[Perturbation]]:
    """Class decorator: make a :class:`Perturbation` available under ``name``."""

    def decorator(cls: type[Perturbation]) -> type[Perturbation]:
        if name in _PERTURBATIONS and _PERTURBATIONS[name] is not cls:
            raise ValueError(f"perturbation {name!r} is already registered by {_PERTURBATIONS[name].__qualname__}")
        cls.name = name
        _PERTURBATIONS[name] = cls
        return cls

    return decorator


def perturbation_names() -> list[str]:
    return sorted(_PERTURBATIONS)


def get_perturbation(name: str, level: float, **options: Any) -> Perturbation:
    """The registered perturbation ``name`` at ``level``, its options checked."""
    if name not in _PERTURBATIONS:
        raise ConfigError(f"Unknown perturbation {name!r}: choose from {', '.join(perturbation_names())} "
                          "(a new one is one class decorated with @register_perturbation in benchmark/train/perturb.py).")
    return _PERTURBATIONS[name](level, **options)


# -- what a perturbation needs from the data ---------------------------------------------------
@dataclass(frozen=True)
class TextSpecials:
    """Token ids a text perturbation must know: kept ones and the replacement."""

    cls_id: int
    sep_id: int
    pad_id: int
    unk_id: int

    @property
    def kept(self) -> tuple[int, ...]:
        return (self.cls_id, self.sep_id, self.pad_id)


@dataclass
class PerturbContext:
    """Measured once per dataset from its *train* split (never from the split being scored)."""

    feature_std: torch.Tensor | None = None  # [D] per feature dim, [C] per pixel channel, or [] global
    specials: TextSpecials | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def sample_generator(seed: int, name: str, sample_index: int) -> torch.Generator:
    """A CPU generator for one sample: a stable 63-bit hash of (seed, name, sample_index)."""
    digest = hashlib.blake2b(f"{int(seed)}/{name}/{int(sample_index)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


class Perturbation(ABC):
    """One kind of corruption at one level. Subclasses set ``modality``, ``level_range`` and
    ``options`` (name -> allowed values, first = default) and implement :meth:`perturb`."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    level_range: ClassVar[tuple[float, float]] = (0.0, math.inf)
    level_name: ClassVar[str] = "level"
    options: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, level: float, **options: Any) -> None:
        try:
            value = float(level)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name}: {self.level_name} {level!r} is not a number.") from None
        low, high = self.level_range
        if not math.isfinite(value) or not low <= value <= high:
            bound = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g} and finite"
            raise ConfigError(f"{self.name}: {self.level_name} {level!r} is out of range; it must be {bound}.")
        self.level = value
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(f"{self.name}: unknown option(s) {', '.join(unknown)}; it takes "
                              f"{', '.join(self.options) or 'none'}.")
        self.chosen: dict[str, str] = {}
        for key, allowed in self.options.items():
            choice = str(options.get(key, allowed[0]))
            if choice not in allowed:
                raise ConfigError(f"{self.name}: {key}={choice!r} is not one of {', '.join(allowed)}.")
            self.chosen[key] = choice

    @property
    def is_identity(self) -> bool:
        return self.level == 0.0

    @property
    def tag(self) -> str:
        """``image_noise-0.5``: a file-name-safe label (options are in the eval record)."""
        return f"{self.name}-{self.level:g}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "modality": self.modality, **self.chosen}

    @abstractmethod
    def context(self, train_dataset: Any) -> PerturbContext:
        """What :meth:`perturb` needs, measured on the train split's dataset."""

    @abstractmethod
    def perturb(self, batch: dict, seed: int, context: PerturbContext) -> dict:
        """A new batch (the input is not modified); ``batch`` itself when the level is 0."""


# -- image: Gaussian noise ----------------------------------------------------------------------
def _image_key(batch: Mapping[str, Any]) -> str:
    if "image_feature_0" in batch:
        return "image_feature_0"
    if "image" in batch:
        return "image"
    raise ConfigError("image_noise: the batch has neither image_feature_0 (region features) nor image (pixels).")


def _real_rows(batch: Mapping[str, Any], features: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` real-region mask from ``image_info_0.max_features`` (all rows when absent)."""
    b, n, _ = features.shape
    info = batch.get("image_info_0")
    count = info.get("max_features") if isinstance(info, Mapping) else None
    if count is None:
        return torch.ones(b, n, dtype=torch.bool)
    count = torch.as_tensor(count).reshape(-1, 1).cpu()
    return torch.arange(n)[None, :] < count


def input_std(dataset: Iterable[Mapping[str, Any]], reduce: str) -> torch.Tensor:
    """Std of the image inputs over ``dataset`` (float64 sums, padded regions left out).

    ``per_dimension``: one std per feature dimension (regions) or per channel (pixels);
    ``global``: one scalar over every real value.
    """
    total = total_sq = count = None
    for sample in dataset:
        key = _image_key(sample)
        x = torch.as_tensor(sample[key]).double()
        if key == "image_feature_0":
            rows = _real_rows({"image_info_0": sample.get("image_info_0")}, x.unsqueeze(0))[0]
            values = x[rows]  # [R, D]
        else:
            values = x.reshape(x.shape[0], -1).T  # [H*W, C]
        if reduce == "global":
            values = values.reshape(-1, 1)
        s, sq, c = values.sum(0), (values**2).sum(0), values.shape[0]
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count = c if count is None else count + c
    if not count or count < 2:
        raise ConfigError("image_noise: the train split has fewer than two real image values to measure a std on.")
    mean = total / count
    var = (total_sq / count - mean**2).clamp(min=0.0) * count / (count - 1)
    std = var.sqrt().float()
    return std.reshape(()) if reduce == "global" else std


@register_perturbation("image_noise")
class ImageNoise(Perturbation):
    """``x + level * std * z`` on real regions (or every pixel), ``z ~ N(0, 1)`` per sample.

    ``std`` is the train split's input std (``options.std``: per feature dimension / pixel
    channel, or one global value), so a sigma means the same corruption on datasets whose
    features have different scales. Padded regions stay as they were.
    """

    modality = "image"
    level_name = "sigma"
    options = {"std": ("per_dimension", "global")}

    def context(self, train_dataset: Any) -> PerturbContext:
        std = input_std(train_dataset, self.chosen["std"])
        return PerturbContext(feature_std=std, notes={"std_reduce": self.chosen["std"],
                                                      "std_mean": float(std.mean())})

    def perturb(self, batch: dict, seed: int, context: PerturbContext) -> dict:
        if self.is_identity:
            return batch
        if context.feature_std is None:
            raise ValueError("image_noise needs PerturbContext.feature_std (call context() on the train split)")
        key = _image_key(batch)
        x = batch[key]
        std = context.feature_std.to(torch.float32)
        if key == "image" and std.dim() == 1:
            std = std.reshape(-1, 1, 1)  # per channel of [C, H, W]
        noise = torch.stack([
            torch.randn(tuple(x.shape[1:]), generator=sample_generator(seed, self.name, int(i)))
            for i in torch.as_tensor(batch["sample_index"]).reshape(-1).tolist()
        ]) * (self.level * std)
        if key == "image_feature_0":
            noise = noise * _real_rows(batch, x).unsqueeze(-1).to(noise.dtype)
        return {**batch, key: (x.float() + noise.to(x.device)).to(x.dtype)}


# -- text: token dropout ------------------------------------------------------------------------
def text_specials(dataset: Any) -> TextSpecials:
    """The BERT special ids of a dataset's tokenizer (``dataset.text_processor.tokenizer``)."""
    tokenizer = dataset.text_processor.tokenizer
    return TextSpecials(int(tokenizer.cls_token_id), int(tokenizer.sep_token_id),
                        int(tokenizer.pad_token_id), int(tokenizer.unk_token_id))


@register_perturbation("text_dropout")
class TextDropout(Perturbation):
    """Each real token other than ``[CLS]``/``[SEP]`` is dropped with probability ``level``.

    ``options.token``: ``unk`` replaces it by ``[UNK]`` (positions and length unchanged: the
    word is unreadable, its slot remains), ``remove`` deletes it and shifts the rest left,
    padding the end (the sentence gets shorter, as with a missing word).
    """

    modality = "text"
    level_name = "rate"
    level_range = (0.0, 1.0)
    options = {"token": ("unk", "remove")}

    def context(self, train_dataset: Any) -> PerturbContext:
        return PerturbContext(specials=text_specials(train_dataset))

    def dropped(self, ids: torch.Tensor, mask: torch.Tensor, sample_indices: list[int], seed: int,
                specials: TextSpecials) -> torch.Tensor:
        """``[B, L]`` bool: which tokens this level drops."""
        draws = torch.stack([torch.rand(ids.shape[1], generator=sample_generator(seed, self.name, i))
                             for i in sample_indices]).to(ids.device)
        candidate = mask.bool() & ~torch.isin(ids, torch.tensor(specials.kept, device=ids.device))
        return candidate & (draws < self.level)

    def perturb(self, batch: dict, seed: int, context: PerturbContext) -> dict:
        if self.is_identity:
            return batch
        if context.specials is None:
            raise ValueError("text_dropout needs PerturbContext.specials (call context() on the train split)")
        specials = context.specials
        ids = batch["input_ids"]
        mask = batch.get("input_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        drop = self.dropped(ids, mask, torch.as_tensor(batch["sample_index"]).reshape(-1).tolist(), seed, specials)
        if self.chosen["token"] == "unk":
            return {**batch, "input_ids": ids.masked_fill(drop, specials.unk_id)}
        keep = mask.bool() & ~drop
        # Stable sort on "not kept" moves kept tokens to the front in their order.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        kept_count = keep.sum(1, keepdim=True)
        new_mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < kept_count
        out = {**batch, "input_ids": torch.where(new_mask, ids.gather(1, order), specials.pad_id),
               "input_mask": new_mask.to(mask.dtype)}
        if batch.get("segment_ids") is not None:
            out["segment_ids"] = torch.where(new_mask, batch["segment_ids"].gather(1, order), 0)
        return out


# -- applying one to an evaluation loader ---------------------------------------------------------
class PerturbedLoader:
    """Iterates ``loader`` and yields each batch perturbed (the scoring loop is unchanged)."""

    def __init__(self, loader: Iterable[dict], perturbation: Perturbation, seed: int, context: PerturbContext) -> None:
        self.loader, self.perturbation, self.seed, self.context = loader, perturbation, int(seed), context

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield self.perturbation.perturb(batch, self.seed, self.context)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


_CONTEXTS: dict[tuple, PerturbContext] = {}


def perturbation_context(perturbation: Perturbation, config: DictConfig) -> PerturbContext:
    """The perturbation's context from ``config``'s train split, memoised per process by the
    train data's fingerprint and the options (a grid's runs share their dataset's std)."""
    from benchmark.data.build import build_dataset
    from benchmark.data.fingerprint import data_fingerprint

    key = (perturbation.name, tuple(sorted(perturbation.chosen.items())), data_fingerprint(config).digest)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = perturbation.context(build_dataset(config, "train"))
    return _CONTEXTS[key]


def loader_transform(perturbation: Perturbation, seed: int, config: DictConfig) -> Callable[[Iterable[dict]], Iterable[dict]]:
    """``loader -> perturbed loader`` for :func:`benchmark.train.rescore.score_checkpoint`."""
    context = perturbation_context(perturbation, config)
    return lambda loader: PerturbedLoader(loader, perturbation, seed, context)


# -- the robustness spec (benchmark/config/robustness.yaml) ---------------------------------------
AUDC_NORMALISATIONS = ("span", "relative")
_ABSENT = object()


@dataclass(frozen=True)
class RobustnessSpec:
    split: str
    views: tuple[str, ...]
    seed: int
    perturbations: dict[str, dict[str, Any]]  # name -> {"levels": [...], option: value}
    audc_normalisation: str

    def levels(self, name: str) -> list[float]:
        return [float(v) for v in self.perturbations[name]["levels"]]

    def options(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.perturbations[name].items() if k != "levels"}

    def build(self, name: str, level: float) -> Perturbation:
        return get_perturbation(name, level, **self.options(name))

    def scored_part(self) -> dict[str, Any]:
        """What changes the scores (not the AUDC normalisation, which is analysis only)."""
        return {"split": self.split, "views": list(self.views), "seed": self.seed,
                "perturbations": {k: {**v, "levels": [float(x) for x in v["levels"]]}
                                  for k, v in sorted(self.perturbations.items())}}

    @property
    def eval_name(self) -> str:
        """``robustness_test_<hash>``: the eval directory of this spec's curves in a run."""
        import json

        digest = hashlib.sha256(json.dumps(self.scored_part(), sort_keys=True).encode()).hexdigest()[:8]
        return f"robustness_{self.split}_{digest}"


def load_spec(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RobustnessSpec:
    """The spec file (default: the shipped one) with dotted ``key=value`` overrides, validated:
    every name registered, every level in range, levels strictly increasing."""
    from benchmark import VIEWS

    source = Path(path) if path else SPEC_FILE
    if not source.is_file():
        raise ConfigError(f"Robustness spec {source} does not exist.")
    node = OmegaConf.load(source)
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or (OmegaConf.select(node, key, default=_ABSENT) is _ABSENT and not key.startswith("perturbations.")):
            raise ConfigError(f"Robustness override {arg!r}: expected key=value with a key of {source.name} "
                              "(e.g. seed=1, perturbations.image_noise.levels=[0,1], audc.normalisation=relative).")
        OmegaConf.update(node, key, OmegaConf.create({"v": _literal(value)})["v"], merge=False)
    raw = OmegaConf.to_container(node, resolve=True)
    views = tuple(raw.get("views") or ("multi",))
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ConfigError(f"Robustness spec views {bad} unknown: choose from {', '.join(VIEWS)}.")
    norm = str((raw.get("audc") or {}).get("normalisation", "span"))
    if norm not in AUDC_NORMALISATIONS:
        raise ConfigError(f"audc.normalisation={norm!r}: choose from {', '.join(AUDC_NORMALISATIONS)}.")
    perturbations = dict(raw.get("perturbations") or {})
    if not perturbations:
        raise ConfigError(f"Robustness spec {source} lists no perturbations.")
    spec = RobustnessSpec(str(raw.get("split", "test")), views, int(raw.get("seed", 0)), perturbations, norm)
    for name, entry in perturbations.items():
        levels = (entry or {}).get("levels")
        if not levels or len(levels) < 2:
            raise ConfigError(f"perturbations.{name}.levels needs at least two levels (a curve), got {levels!r}.")
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise ConfigError(f"perturbations.{name}.levels must be strictly increasing, got {levels!r}.")
        for level in levels:
            spec.build(name, level)  # unknown name, option or out-of-range level: one clear error
    return spec


def _literal(value: str) -> Any:
    import ast

    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return value.strip()


def parse_perturb_arg(value: str) -> tuple[str, float]:
    """``image_noise:0.5`` -> ("image_noise", 0.5) for ``msd eval ... perturb=``."""
    name, sep, level = value.strip().partition(":")
    if not sep or not name:
        raise ConfigError(f"perturb={value!r}: expected <name>:<level>, e.g. perturb=image_noise:0.5 or "
                          f"perturb=text_dropout:0.25 (names: {', '.join(perturbation_names())}).")
    try:
        return name, float(level)
    except ValueError:
        raise ConfigError(f"perturb={value!r}: the level {level!r} is not a number.") from None


def perturbation_from_arg(value: str, spec: RobustnessSpec | None = None) -> Perturbation:
    """``perturb=image_noise:0.5`` -> the perturbation, with the spec's options for that name."""
    name, level = parse_perturb_arg(value)
    spec = spec or load_spec()
    return get_perturbation(name, level, **(spec.options(name) if name in spec.perturbations else {}))
