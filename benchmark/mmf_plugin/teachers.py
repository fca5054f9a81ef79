"""Teachers for ``msd_student``: an MMF checkpoint, or a run of this suite (with its cache).

Why two sources: users of the plugin either already have an MMF teacher (a ``best.ckpt`` from
``mmf_run``), or trained one with ``msd run method=teacher`` and want the suite's shared
teacher cache. Both give the same thing to the student: the teacher's logits on the three
views (``teacher_scores``, ``teacher_scores_image``, ``teacher_scores_text``) and, from the
cache, its per-sample saliency.

* ``source: mmf``: the teacher is an MMF model, rebuilt from the checkpoint's own config (MMF
  saves it under ``config``) and loaded strictly. Its views follow :mod:`.views`, like the
  student's, and are always computed live.
* ``source: suite``: the teacher is rebuilt with :func:`benchmark.models.build.build_model` from
  the run's ``config.yaml`` and ``checkpoint.pt``; its views follow the suite's own rule
  (``views.removal`` of that run). Logits come from the suite's teacher cache when one
  matches (``cache: auto``) and the dataset gives every sample an id that maps it to its
  cache row (see :data:`ID_FIELDS`); otherwise they are computed live.

MMF is imported only when an MMF checkpoint is loaded, so this module is usable without it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from benchmark import MODALITIES, VIEWS
from benchmark.config.loader import dataset_node
from benchmark.data.annotations import load_annotations
from benchmark.data.info import DatasetInfo
from benchmark.distill.cache import StaleCacheError, TeacherCache, cache_key, open_cache
from benchmark.distill.teacher import LoadedTeacher
from benchmark.errors import CheckpointError, ConfigError
from benchmark.mmf_plugin.objective import output_key, saliency_key
from benchmark.mmf_plugin.views import view_sample_list
from benchmark.models.build import build_model
from benchmark.tracking.run_store import RunStore
from benchmark.train.checkpoint import BEST, load_checkpoint, load_weights_strict

ID_FIELDS: dict[str, str] = {"hateful_memes": "id", "vqa2": "question_id"}
"""Per dataset, the annotation field MMF copies into the sample list, which identifies a sample.

MMF's mmimdb and visual_entailment datasets put no identifier into the sample list, so a
cache row cannot be found for their samples: their suite teachers run live.
"""


def raw_forward(model: nn.Module, sample_list: Any) -> Mapping[str, Tensor]:
    """``model.forward`` with hooks, *without* MMF ``BaseModel.__call__``'s loss computation.

    A wrapped MMF model carries its own ``losses`` (e.g. ``cross_entropy``) from its config;
    those belong to the wrapper's objective, not to each view's forward pass.
    """
    return nn.Module.__call__(model, sample_list)


class Teacher(abc.ABC):
    """A frozen teacher: ``outputs(sample_list) -> {teacher_scores…, [teacher_saliency_…]}``.

    Not an ``nn.Module`` on purpose: held by ``msd_student`` as a plain attribute, its weights
    stay out of the student's ``state_dict``, optimizer and ``train()``/``eval()`` switches.
    """

    model: nn.Module

    def population_saliency(self, saliency: str) -> dict[str, float] | None:
        """The teacher's dataset-level saliency on its training split, where it has one (a suite
        cache); asked only when the loss's weighting scheme declares ``needs_population``."""
        return None

    def to(self, device: torch.device) -> Teacher:
        self.model.to(device)
        return self

    @abc.abstractmethod
    def outputs(self, sample_list: Any, saliency: str | None) -> dict[str, Tensor]:
        """The teacher's three view logits (and cached saliency) for one batch."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a run log records about the teacher."""


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


# -- an MMF checkpoint --------------------------------------------------------------------------
@dataclass
class MMFTeacher(Teacher):
    model: nn.Module
    checkpoint: str = ""

    def outputs(self, sample_list: Any, saliency: str | None) -> dict[str, Tensor]:
        with torch.no_grad():
            return {
                output_key(view, teacher=True): raw_forward(self.model, view_sample_list(sample_list, view))["scores"]
                for view in VIEWS
            }

    def describe(self) -> dict[str, Any]:
        return {"source": "mmf", "checkpoint": self.checkpoint, "class": type(self.model).__name__}


def _strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def load_mmf_teacher(spec: DictConfig, build: Callable[[DictConfig], nn.Module] | None = None) -> MMFTeacher:
    """Rebuild an MMF teacher from its checkpoint (``teacher.checkpoint``) and load it strictly.

    The model name and config come from the checkpoint's saved ``config``; ``teacher.model``
    and ``teacher.model_config`` override them (e.g. ``bert_model_name: null`` to avoid a
    download when the weights come from the checkpoint anyway).
    """
    path = spec.get("checkpoint")
    if not path:
        raise ConfigError("model_config.msd_student.teacher.checkpoint: give the MMF teacher's checkpoint file.")
    try:  # MMF checkpoints carry OmegaConf objects, which torch>=2.6's weights_only refuses
        payload = torch.load(str(path), map_location="cpu", weights_only=False)
    except FileNotFoundError as exc:
        raise CheckpointError(f"MMF teacher checkpoint {path} does not exist.") from exc
    state = payload.get("model", payload) if isinstance(payload, Mapping) else payload
    saved = payload.get("config") if isinstance(payload, Mapping) else None
    saved = OmegaConf.create(saved) if saved is not None else OmegaConf.create({})
    name = spec.get("model") or saved.get("model")
    if not name:
        raise ConfigError(
            f"{path} has no saved config naming its model: set model_config.msd_student.teacher.model "
            "and teacher.model_config."
        )
    overrides = spec.get("model_config") or {}
    overrides = OmegaConf.to_container(overrides, resolve=True) if isinstance(overrides, DictConfig) else overrides
    model_config = OmegaConf.merge(
        OmegaConf.create(OmegaConf.to_container((saved.get("model_config") or {}).get(name) or OmegaConf.create({}))),
        OmegaConf.create(dict(overrides)), {"model": str(name)},
    )
    if build is None:
        from mmf.utils.build import build_model as build
    model = build(model_config)
    state = _strip_prefix(_strip_prefix(state, "module."), "student.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"MMF teacher checkpoint {path} does not fit {name}: missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]}. Give the teacher's model and model_config."
        )
    return MMFTeacher(model=freeze(model), checkpoint=str(path))


# -- a run of this suite ------------------------------------------------------------------------
@dataclass
class CacheIndex:
    """Maps an MMF sample's id to its row in the teacher cache, per split.

    The cache indexes rows by the order of the records in the split's annotation files (as the
    teacher's run config lists them); the same files give the id of every row.
    """

    dataset: str
    rows: dict[str, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, teacher_config: DictConfig, cache: TeacherCache) -> CacheIndex | None:
        name = str(teacher_config.dataset)
        id_field = ID_FIELDS.get(name)
        if id_field is None:
            return None
        node = dataset_node(teacher_config)
        index = cls(name)
        for split, shape in cache.meta["shapes"].items():
            records = [r for rel in node.annotations.get(split, []) or []
                       for r in load_annotations(Path(str(node.data_dir)) / str(rel))]
            ids = [int(r[id_field]) for r in records]
            if len(ids) != int(shape["logits"][0]) or len(set(ids)) != len(ids):
                raise StaleCacheError(
                    f"the {split} annotations have {len(ids)} records ({len(set(ids))} distinct {id_field}s) "
                    f"but the cache has {shape['logits'][0]} rows"
                )
            index.rows[split] = {sample_id: row for row, sample_id in enumerate(ids)}
        return index

    def lookup(self, split: str, ids: Tensor) -> Tensor:
        table = self.rows.get(split)
        if table is None:
            raise KeyError(f"the teacher cache has no {split!r} split")
        try:
            return torch.tensor([table[int(i)] for i in ids.reshape(-1).tolist()], dtype=torch.long)
        except KeyError as exc:
            raise ConfigError(
                f"{self.dataset} sample {ID_FIELDS[self.dataset]}={exc.args[0]} of MMF's {split!r} split is not in "
                f"the teacher cache's {split!r} split: MMF's dataset_config reads other annotation files than "
                "the suite's teacher run did. Use the same splits, or set teacher.cache=off."
            ) from None


SUITE_KEYS = ("input_ids", "input_mask", "segment_ids", "image", "image_feature_0")


def _rows(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return list(value.unbind(0)) if value.dim() == 3 else [value]
    return [torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in value]


def suite_batch(sample_list: Mapping[str, Any]) -> dict[str, Any]:
    """The keys a suite model reads, from an MMF ``SampleList``.

    MMF's feature reader pads ``image_feature_0`` to ``max_features`` rows but leaves
    ``image_info_0.bbox`` at each image's own box count (a list of arrays after collation);
    the suite's models expect boxes padded like the features, as the suite's reader writes them.
    """
    batch = {key: sample_list[key] for key in SUITE_KEYS if key in sample_list}
    info, features = sample_list.get("image_info_0"), batch.get("image_feature_0")
    if info is None or features is None:
        return batch
    size, rows, device = features.shape[0], features.shape[1], features.device
    new: dict[str, Tensor] = {}
    for key in ("max_features", "image_width", "image_height"):
        if info.get(key) is not None:
            new[key] = torch.as_tensor(np.asarray(info[key])).to(device)
    if info.get("bbox") is not None:
        boxes = features.new_zeros(size, rows, 4)
        for i, box in enumerate(_rows(info["bbox"])):
            count = min(int(box.shape[0]), rows)
            boxes[i, :count] = box[:count].to(device=device, dtype=boxes.dtype)
        new["bbox"] = boxes
    batch["image_info_0"] = new
    return batch


@dataclass
class SuiteTeacher(Teacher):
    model: nn.Module
    loaded: LoadedTeacher | None = None
    cache: TeacherCache | None = None
    index: CacheIndex | None = None

    def outputs(self, sample_list: Any, saliency: str | None) -> dict[str, Tensor]:
        split = str(sample_list.get("dataset_type", "train"))
        if self.cache is not None and self.index is not None:
            ids = sample_list[ID_FIELDS[self.index.dataset]]
            rows = self.index.lookup(split, ids)
            device = ids.device
            out = {output_key(v, teacher=True): t.to(device) for v, t in self.cache.logits(split, rows).items()}
            if saliency is not None and saliency in self.cache.definitions:
                values = self.cache.saliency(split, rows, saliency)
                out.update({saliency_key(m): values[m].to(device) for m in MODALITIES})
            return out
        with torch.no_grad():
            logits = self.model.forward_views(suite_batch(sample_list), VIEWS)
        return {output_key(v, teacher=True): logits[v].float() for v in VIEWS}

    def population_saliency(self, saliency: str) -> dict[str, float] | None:
        if self.cache is None or self.index is None or saliency not in self.cache.definitions:
            return None
        rows = np.arange(int(self.cache.meta["shapes"]["train"]["saliency"][0]))
        return self.cache.population_saliency("train", rows, saliency)

    def describe(self) -> dict[str, Any]:
        run = self.loaded.run if self.loaded else None
        return {"source": "suite", "run": run.run_id if run else None,
                "cache": str(self.cache.path) if self.cache else None, "class": type(self.model).__name__}


def _open_suite_cache(spec: DictConfig, loaded: LoadedTeacher) -> TeacherCache | None:
    choice = str(spec.get("cache", "auto") or "off")
    if choice == "off":
        return None
    if choice == "auto":
        key, _ = cache_key(loaded.config, loaded)
        path = Path(str(loaded.config.env.cache_dir)) / "teacher" / key
        if not path.exists():
            return None
    else:
        path = Path(choice).expanduser()
        if not (path / "meta.json").exists():
            raise ConfigError(f"model_config.msd_student.teacher.cache: {path} is not a teacher cache (no meta.json).")
        key = json.loads((path / "meta.json").read_text()).get("key", "")
    try:
        cache = open_cache(path, key)
    except StaleCacheError as exc:
        raise ConfigError(f"Teacher cache {path} cannot be used ({exc}); rebuild it with `msd cache build`.") from exc
    if cache.meta.get("inputs", {}).get("teacher_run") != loaded.run.run_id:
        raise ConfigError(f"Teacher cache {path} belongs to run {cache.meta['inputs'].get('teacher_run')}, "
                          f"not to the teacher {loaded.run.run_id}.")
    return cache


def load_suite_teacher(spec: DictConfig) -> SuiteTeacher:
    """The teacher of a completed suite run (``teacher.run``, under ``teacher.save_dir``)."""
    ref = spec.get("run")
    if not ref:
        raise ConfigError("model_config.msd_student.teacher.run: give the suite teacher's run id or run directory.")
    run = RunStore(str(spec.get("save_dir") or "results/runs")).find(str(ref))
    summary = run.read_summary() or {}
    if summary.get("status") != "completed":
        raise CheckpointError(f"Teacher run {run.path} is not complete (status: {summary.get('status', 'none')}).")
    config = run.read_config()
    payload = load_checkpoint(run.file(BEST))
    raw_info = dict(payload.get("dataset_info") or summary.get("dataset_info") or {})
    raw_info["label_names"] = tuple(raw_info.get("label_names") or ())
    model = build_model(config, DatasetInfo(**raw_info), role="teacher")
    load_weights_strict(model, payload["model"], str(run.file(BEST)))
    loaded = LoadedTeacher(run=run, config=config, model=freeze(model), summary=summary)
    cache = _open_suite_cache(spec, loaded)
    index = CacheIndex.build(config, cache) if cache is not None else None
    return SuiteTeacher(model=loaded.model, loaded=loaded, cache=cache if index else None, index=index)


def load_teacher(spec: DictConfig) -> Teacher:
    source = str(spec.get("source") or "mmf")
    if source == "mmf":
        return load_mmf_teacher(spec)
    if source == "suite":
        return load_suite_teacher(spec)
    raise ConfigError(f"model_config.msd_student.teacher.source must be 'mmf' or 'suite', got {source!r}")
