"""What a grid cell trains on, for ``msd grid plan``: split sizes, input shapes, sample batches.

A plan must price a grid before its data exists on this machine (a login node, a laptop), so
the data of a cell has one of three sources, in this order, and the plan prints which:

1. **counted**: the cell's annotation files exist (the user's MMF data directory, or data an
   earlier run made). The train split is built with the suite's own dataset class, so its
   length is what the trainer iterates over (meta hold-out included), and the step-time probes
   run on its real first batch (real text lengths and region counts).
2. **generated**: the grid sets ``data.size`` (small scales). The same generator call the
   grid's data task would make (``msd data make``, same size and seed) writes into a temporary
   directory that is removed afterwards, and that data is read as in 1.
3. **MMF's published sizes**: no files here and no ``data.size``. Split sizes come from the
   files MMF downloads, by file name (:data:`PUBLISHED_FILES`, so a user who switched
   ``dev_unseen`` for ``dev_seen`` gets that file's size, and an unknown file is an error rather
   than a guess); inputs are random, padded to ``max_seq_length`` tokens and ``max_features``
   2048-d regions (MMF's region features): an upper bound, since batches trim shared padding.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.config.loader import build_config, dataset_node
from benchmark.data.build import build_dataloader, build_dataset, meta_split_indices, train_excludes_meta
from benchmark.data.info import DatasetInfo
from benchmark.distill.fingerprint import digest
from benchmark.grid.spec import GridError

SPLITS = ("train", "val", "test")
COUNTED, GENERATED, PUBLISHED = "counted", "generated", "published"
MMF_FEATURE_DIM = 2048  # MMF's Detectron region features (VisualBERT / MMBT / VQA2 defaults)
PUBLISHED_NUM_LABELS = {"vqa2": 3129}  # answers_vqa.txt of MMF's VQA2 download, <unk> included


class PlanError(GridError):
    """``msd grid plan`` cannot price a grid as asked; the message says what to change."""


@dataclass(frozen=True)
class PublishedFile:
    records: int
    source: str


# Records per annotation file of MMF's downloads, keyed by the path under ``<data_dir>/datasets``.
PUBLISHED_FILES: dict[str, PublishedFile] = {
    **{f"hateful_memes/defaults/annotations/{name}.jsonl": PublishedFile(n, "Hateful Memes (Kiela et al., 2020)")
       for name, n in (("train", 8500), ("dev_seen", 500), ("dev_unseen", 540), ("test_seen", 1000),
                       ("test_unseen", 2000))},
    **{f"mmimdb/defaults/annotations/{name}.jsonl": PublishedFile(n, "MM-IMDb (Arevalo et al., 2017)")
       for name, n in (("train", 15552), ("dev", 2608), ("test", 7799))},
    **{f"visual_entailment/defaults/annotations/snli_ve_{name}.jsonl": PublishedFile(n, "SNLI-VE (Xie et al., 2019)")
       for name, n in (("train", 529527), ("dev", 17858), ("test", 17901))},
    "vqa2/defaults/annotations/imdb_train2014.npy": PublishedFile(443757, "VQA v2 (Goyal et al., 2017)"),
    "vqa2/defaults/annotations/imdb_val2014.npy": PublishedFile(214354, "VQA v2 (Goyal et al., 2017)"),
}


@dataclass
class CellData:
    """One dataset as a cell sees it: records per split (train before the meta hold-out), the
    model-facing shapes, and a way to get a batch of any size."""

    dataset: str
    source: str  # COUNTED | GENERATED | PUBLISHED
    detail: str  # the directory counted, ``data.size=64``, or the publications
    records: dict[str, int]
    info: DatasetInfo
    _train_set: Any = field(default=None, repr=False)

    def train_size(self, config: DictConfig) -> int:
        """Samples a run of ``config`` trains on: the train records minus the meta hold-out."""
        records = self.records["train"]
        meta = (config.get("data") or {}).get("meta_split") or {}
        fraction = float(meta.get("fraction", 0.1))
        if fraction > 0 and train_excludes_meta(config):
            return records - len(meta_split_indices(records, fraction, int(meta.get("seed", 1234))))
        return records

    def batch(self, size: int, seed: int = 0) -> dict:
        """A batch of ``size`` samples: the real data's first shuffled batch, else random inputs."""
        if self._train_set is not None:
            loader = build_dataloader(self._train_set, batch_size=size, shuffle=True, seed=seed)
            batch = next(iter(loader))
            if int(batch["sample_index"].shape[0]) < size:  # fewer records than the batch
                reps = -(-size // int(batch["sample_index"].shape[0]))
                batch = _repeat(batch, reps, size)
            return batch
        return random_batch(self.info, size, self.records["train"], seed)

    @property
    def inputs(self) -> str:
        if self._train_set is not None:
            return "a real batch of the data (shared padding trimmed, as in training)"
        return (f"random inputs padded to {self.info.max_seq_length} tokens and "
                + (f"{self.info.max_features} regions of {self.info.feature_dim} dims" if self.info.modality == "features"
                   else f"{self.info.image_size}px images")
                + " (an upper bound: training trims padding shared by a batch)")


class DataCatalog:
    """:class:`CellData` per distinct (dataset, its files and preprocessing), built once."""

    def __init__(self) -> None:
        self._cache: dict[str, CellData] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> DataCatalog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def loaded(self) -> list[CellData]:
        return list(self._cache.values())

    def for_cell(self, config: DictConfig, args: tuple[str, ...], size: int | None, seed: int) -> CellData:
        node = dataset_node(config)
        key = digest({"dataset": str(config.dataset), "node": OmegaConf.to_container(node, resolve=True),
                      "size": size, "seed": seed})
        if key not in self._cache:
            self._cache[key] = self._load(config, args, size, seed)
        return self._cache[key]

    def _load(self, config: DictConfig, args: tuple[str, ...], size: int | None, seed: int) -> CellData:
        name = str(config.dataset)
        if _files_exist(config):
            return _counted(config, COUNTED, str(dataset_node(config).data_dir))
        if size is not None:
            from benchmark.data.make import make_dataset

            tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="msd-plan-")))
            make_dataset(name, tmp, size=size, seed=seed)
            generated = build_config([*args, f"env.data_dir={tmp}"])
            return _counted(generated, GENERATED, f"data.size={size}, seed {seed}: made by the generator in a "
                                                  "temporary directory, as the grid's data task would")
        return _published(config)


def split_files(config: DictConfig, split: str) -> list[str]:
    """The annotation files of ``split`` as the dataset resolves them (absolute paths)."""
    node = dataset_node(config)
    paths = (node.get("annotations") or {}).get(split) or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    data_dir = os.path.expanduser(str(node.get("data_dir", ".")))
    return [os.path.join(data_dir, os.path.expanduser(str(p))) for p in paths]


def _files_exist(config: DictConfig) -> bool:
    return all(split_files(config, s) and all(os.path.isfile(p) for p in split_files(config, s)) for s in SPLITS)


def _counted(config: DictConfig, source: str, detail: str) -> CellData:
    full = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    OmegaConf.update(full, "data.meta_split.fraction", 0.0, force_add=True)  # every record; cells apply their rule
    train = build_dataset(full, "train")
    records = {"train": len(train)}
    for split in ("val", "test"):
        records[split] = sum(_count_records(p) for p in split_files(config, split))
    return CellData(str(config.dataset), source, detail, records, train.info, _train_set=train)


def _count_records(path: str) -> int:
    from benchmark.data.annotations import load_annotations

    return len(load_annotations(path))


def _published(config: DictConfig) -> CellData:
    name = str(config.dataset)
    records: dict[str, int] = {}
    sources: set[str] = set()
    for split in SPLITS:
        total = 0
        for path in split_files(config, split):
            known = _published_file(path)
            if known is None:
                raise PlanError(
                    f"{name}: {path} does not exist here and its size is not among MMF's published files "
                    f"({', '.join(sorted({p.split('/')[0] for p in PUBLISHED_FILES}))}). Run the plan where the "
                    f"data is (env.data_dir=... or DATA_DIR=...), or give the grid a data.size."
                )
            total += known.records
            sources.add(known.source)
        records[split] = total
    detail = f"no files under {dataset_node(config).data_dir}; sizes of MMF's download ({'; '.join(sorted(sources))})"
    return CellData(name, PUBLISHED, detail, records, _assumed_info(config))


def _published_file(path: str) -> PublishedFile | None:
    normalised = path.replace(os.sep, "/")
    return next((known for suffix, known in PUBLISHED_FILES.items() if normalised.endswith("/" + suffix)), None)


def _assumed_info(config: DictConfig) -> DatasetInfo:
    """The shapes of MMF's data for a dataset whose files are not here."""
    node = dataset_node(config)
    name = str(config.dataset)
    labels = node.get("label_names")
    num_labels = node.get("num_labels") or (len(labels) if labels else None) or PUBLISHED_NUM_LABELS.get(name)
    if num_labels is None:
        raise PlanError(f"{name}: the number of labels comes from its vocabulary file, which is not here; set "
                        f"dataset_config.{name}.num_labels or run the plan where the data is.")
    text = ((node.get("processors") or {}).get("text_processor") or {}).get("params") or {}
    features = bool(node.get("use_features", True))
    return DatasetInfo(
        name=name, task=str(node.task), num_labels=int(num_labels),
        label_names=tuple(map(str, labels)) if labels else (),
        modality="features" if features else "pixels",
        feature_dim=MMF_FEATURE_DIM if features else 0,
        max_features=int(node.get("max_features", 100)) if features else 0,
        image_size=0 if features else int(node.get("image_size", 224)),
        max_seq_length=int(text.get("max_seq_length", 128)),
    )


def random_batch(info: DatasetInfo, size: int, records: int, seed: int = 0) -> dict:
    """A collated batch of the contract's keys (docs/dev/contracts.md), every text and region
    slot real (no padding): what the largest batch of this shape costs."""
    g = torch.Generator().manual_seed(seed)
    length = info.max_seq_length
    ids = torch.randint(1000, 29000, (size, length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    batch: dict[str, Any] = {"input_ids": ids, "input_mask": torch.ones_like(ids), "segment_ids": torch.zeros_like(ids)}
    if info.modality == "pixels":
        batch["image"] = torch.rand(size, 3, info.image_size, info.image_size, generator=g)
    else:
        n = info.max_features
        batch["image_feature_0"] = torch.randn(size, n, info.feature_dim, generator=g)
        batch["image_info_0"] = {"max_features": torch.full((size,), n, dtype=torch.long),
                                 "bbox": torch.rand(size, n, 4, generator=g)}
    if info.task == "single_label":
        batch["targets"] = torch.randint(0, info.num_labels, (size,), generator=g)
    else:
        batch["targets"] = (torch.rand(size, info.num_labels, generator=g) < 2.0 / info.num_labels).float()
    batch["sample_index"] = torch.randint(0, max(1, records), (size,), generator=g)
    batch["id"] = batch["sample_index"].clone()
    return batch


def _repeat(batch: Any, reps: int, size: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.repeat(reps, *([1] * (batch.dim() - 1)))[:size]
    if isinstance(batch, dict):
        return {k: _repeat(v, reps, size) for k, v in batch.items()}
    if isinstance(batch, list):
        return (batch * reps)[:size]
    return batch
