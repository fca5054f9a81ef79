"""The dataset base class: MMF annotation files in, samples per docs/dev/contracts.md out.

Everything that is the same for every MMF dataset lives here (annotation files of a split,
region features or images, the ``bert_tokenizer`` processor, label spaces and targets);
a registered dataset only says how one of its records names its text, image and label.
Records are parsed once at construction, so a label outside the label set or a feature key
missing from the LMDB fails before training starts, not hours into an epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from benchmark.data import vocab as vocab_lib
from benchmark.data.annotations import read_annotations
from benchmark.data.features import FeatureReader, open_feature_reader, pad_features
from benchmark.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, find_image, load_image
from benchmark.data.in_memory import CollatedBatch, InMemoryPolicy, SplitTensors
from benchmark.data.info import DatasetInfo
from benchmark.data.split_store import SplitStore
from benchmark.data.tokenizer import BertTokenizerProcessor, TokenizedTexts, build_text_processor
from benchmark.errors import ConfigError, DataError

FILE_SPLITS = ("train", "val", "test")
# MMF image_database's order of keys that may name a record's image.
IMAGE_KEYS = ("Flickr30kID", "Flikr30kID", "identifier", "image_path", "image_name", "img", "image_id")
MISSING_LABEL = -1
_FILE_KINDS = {"annotations": "annotation file", "features": "feature file", "images": "image folder"}


@dataclass(slots=True)
class Entry:
    """One parsed record: what ``__getitem__`` needs, nothing else kept in memory."""

    index: int  # position in the concatenated annotation list of the split's files
    file_index: int
    where: str
    sample_id: int | str
    text: str
    feature_key: str | None
    image_path: str | None
    target: Any  # int (single_label), tuple of indices (multi_label), {index: score}, or None


class MMFDataset(Dataset):
    """Base of the registered datasets. Subclasses implement the ``get_*`` record hooks.

    ``config`` is the dataset's ``dataset_config.<name>`` node; ``dataset_type`` the file split
    whose annotations are read (train/val/test); ``select`` picks, from the number of records,
    which of them this dataset holds (the train/meta partition), keeping ``sample_index`` as
    the index into the full list so teacher caches line up across subsets.
    """

    dataset_name: ClassVar[str] = ""

    def __init__(
        self,
        config: Any,
        dataset_type: str,
        *,
        name: str | None = None,
        select: Callable[[int], Sequence[int]] | None = None,
        split: str | None = None,
    ) -> None:
        super().__init__()
        if dataset_type not in FILE_SPLITS:
            raise ConfigError(f"dataset_type must be one of {FILE_SPLITS}, got {dataset_type!r}")
        self.config = config
        self.name = name or self.dataset_name
        self.dataset_type = dataset_type
        self.split = split or dataset_type
        self.key = f"dataset_config.{self.name}"
        self.data_dir = os.path.expanduser(str(config.get("data_dir", ".")))
        self.task = str(config.get("task", "single_label"))

        self._init_label_space()
        processors = config.get("processors", None) or {}
        self.text_processor: BertTokenizerProcessor = build_text_processor(
            processors.get("text_processor", None), where=f"{self.key}.processors.text_processor"
        )
        vocab_file = self.text_processor.vocab_file
        if vocab_file and not os.path.isabs(os.path.expanduser(vocab_file)):
            candidate = os.path.join(self.data_dir, vocab_file)
            if os.path.isfile(candidate):
                self.text_processor.vocab_file = candidate

        self.use_features = bool(config.get("use_features", False))
        self.use_images = bool(config.get("use_images", False))
        if not (self.use_features or self.use_images):
            raise ConfigError(
                f"{self.key}: set use_features or use_images to true; a sample needs an image side."
            )

        self.annotation_files = self._split_paths("annotations")
        self.entries = self._load_entries(self.annotation_files, select)
        self.has_targets = all(e.target is not None for e in self.entries)
        self.tokenized = TokenizedTexts(self.text_processor, len(self.entries))

        self.max_features = int(config.get("max_features", 100))
        self.return_features_info = bool(config.get("return_features_info", True))
        self.feature_dim = 0
        self.image_size = 0
        if self.use_features:
            self._init_features()
        else:
            self._init_images()
        self.info = self._build_info()
        self.in_memory: InMemoryPolicy | None = None  # build_dataset sets the run's policy and store
        self.split_store: SplitStore | None = None
        self._tensors: SplitTensors | None = None
        self._kept = False

    # -- record hooks (per dataset) --------------------------------------------------------
    def get_text(self, record: dict[str, Any]) -> str:
        return str(record["text"])

    def get_id(self, record: dict[str, Any], index: int) -> int | str:
        return record.get("id", index)

    def get_label(self, record: dict[str, Any]) -> Any:
        """The raw label (int, name, answer list, genre list), or None when absent."""
        return record.get("label")

    def get_image_path(self, record: dict[str, Any]) -> str:
        """Image file name relative to the images folder (extension optional)."""
        for key in IMAGE_KEYS:
            if record.get(key) is not None:
                return str(record[key])
        raise KeyError("/".join(IMAGE_KEYS))

    def get_feature_key(self, record: dict[str, Any]) -> str:
        """MMF's feature path: ``feature_path`` if present, else derived from the image name."""
        if record.get("feature_path"):
            path = str(record["feature_path"])
            return path[: -len(".npy")] if path.endswith(".npy") else path
        image = self.get_image_path(record)
        stem, ext = os.path.splitext(image)
        return stem if ext else image

    # -- construction ----------------------------------------------------------------------
    def _split_paths(self, kind: str) -> list[str]:
        node = self.config.get(kind, None)
        paths = node.get(self.dataset_type, None) if node is not None else None
        if not paths:
            raise ConfigError(
                f"{self.key}.{kind}.{self.dataset_type} is not set; list the {kind} files of the "
                f"'{self.dataset_type}' split (relative to {self.key}.data_dir)."
            )
        paths = [paths] if isinstance(paths, str) else list(paths)
        return [os.path.join(self.data_dir, os.path.expanduser(str(p))) for p in paths]

    def _missing_file_error(self, kind: str, path: str, position: int) -> DataError:
        return DataError(
            f"The {_FILE_KINDS[kind]} {path} for the '{self.dataset_type}' split of {self.name} does not exist "
            f"(config key {self.key}.{kind}.{self.dataset_type}[{position}], relative to "
            f"{self.key}.data_dir = {self.data_dir}). To write the embedded synthetic data there, "
            f"run `msd data make --dataset {self.name}`; to use an existing MMF data directory, "
            f"pass env.data_dir=/path/to/mmf/data (the folder that holds datasets/)."
        )

    def _load_entries(self, files: list[str], select: Callable[[int], Sequence[int]] | None) -> list[Entry]:
        records: list[dict[str, Any]] = []
        where: list[str] = []
        file_of: list[int] = []
        for position, path in enumerate(files):
            if not os.path.isfile(path):
                raise self._missing_file_error("annotations", path, position)
            file_records, file_where = read_annotations(path)
            records += file_records
            where += file_where
            file_of += [position] * len(file_records)
        if not records:
            raise DataError(
                f"The '{self.dataset_type}' split of {self.name} is empty: {', '.join(files)} hold "
                f"no records. Regenerate the data (`msd data make --dataset {self.name}`) or fix "
                f"{self.key}.annotations.{self.dataset_type}."
            )
        indices = list(range(len(records))) if select is None else [int(i) for i in select(len(records))]
        if not indices:
            raise DataError(
                f"The '{self.split}' subset of {self.name} is empty ({len(records)} records in "
                f"{', '.join(files)}, none selected). Use more data or change data.meta_split."
            )
        return [self._parse(records[i], i, file_of[i], where[i]) for i in indices]

    def _parse(self, record: dict[str, Any], index: int, file_index: int, where: str) -> Entry:
        try:
            text = self.get_text(record)
            sample_id = self.get_id(record, index)
            feature_key = self.get_feature_key(record) if self.use_features else None
            image_path = None if self.use_features else self.get_image_path(record)
            raw_label = self.get_label(record)
        except KeyError as exc:
            raise DataError(
                f"{where}: the record has no {exc.args[0]!r} field, which {self.name} needs "
                f"(keys present: {', '.join(sorted(map(str, record)))}). The file does not follow "
                f"MMF's {self.name} format."
            ) from exc
        target = None if raw_label is None else self._encode_label(raw_label, where)
        if target is None and self.dataset_type == "train":
            raise DataError(
                f"{where}: a training record without a label. Every record of the train split "
                f"needs one; only val/test files may omit labels."
            )
        return Entry(index, file_index, where, sample_id, text, feature_key, image_path, target)

    # -- labels ----------------------------------------------------------------------------
    def _init_label_space(self) -> None:
        self.answer_vocab: vocab_lib.VocabDict | None = None
        configured = self.config.get("num_labels", None)
        if self.task == "single_label":
            names = self.config.get("label_names", None)
            if names is None:
                if configured is None:
                    raise ConfigError(f"{self.key}: set num_labels or label_names for a single_label task.")
                names = [str(i) for i in range(int(configured))]
            self.label_names = tuple(str(n) for n in names)
            if configured is not None and int(configured) != len(self.label_names):
                raise ConfigError(
                    f"{self.key}.num_labels is {configured} but label_names has "
                    f"{len(self.label_names)} entries; make them agree."
                )
        elif self.task in ("multi_label", "soft_score"):
            params = ((self.config.get("processors", None) or {}).get("answer_processor", None) or {}).get(
                "params", None
            ) or {}
            vocab_file = params.get("vocab_file", None)
            if not vocab_file:
                raise ConfigError(
                    f"{self.key}.processors.answer_processor.params.vocab_file is not set; a "
                    f"{self.task} dataset reads its classes/answers from that file."
                )
            path = os.path.join(self.data_dir, os.path.expanduser(str(vocab_file)))
            if not os.path.isfile(path):
                raise DataError(
                    f"The answer/class vocabulary {path} does not exist (config key "
                    f"{self.key}.processors.answer_processor.params.vocab_file, relative to "
                    f"{self.key}.data_dir). Run `msd data make --dataset {self.name}` for the "
                    f"synthetic data, or pass env.data_dir= pointing at an existing MMF data directory."
                )
            self.answer_vocab = vocab_lib.VocabDict.from_file(path)
            self.label_names = tuple(self.answer_vocab.word_list)
            if configured is not None and int(configured) != len(self.answer_vocab):
                raise DataError(
                    f"{self.key}.num_labels is {configured}, but {path} gives "
                    f"{len(self.answer_vocab)} labels (including <unk>). Set num_labels: null to "
                    f"take the count from the file, or use the matching vocabulary."
                )
        else:
            raise ConfigError(
                f"{self.key}.task is {self.task!r}; use single_label, multi_label or soft_score."
            )
        self.num_labels = len(self.label_names)

    def _encode_label(self, raw: Any, where: str) -> Any:
        if self.task == "single_label":
            return vocab_lib.single_label_index(raw, self.label_names, where)
        assert self.answer_vocab is not None
        if isinstance(raw, str):
            raw = [raw]
        if self.task == "multi_label":
            return tuple(vocab_lib.multi_hot_indices(list(raw), self.answer_vocab))
        indices = vocab_lib.answer_indices(list(raw), self.answer_vocab)
        return vocab_lib.vqa_answer_scores(indices, self.answer_vocab.unk_index)

    def make_targets(self, target: Any) -> torch.Tensor:
        """The contract's ``targets``; -1 everywhere marks a val/test record without a label."""
        if self.task == "single_label":
            return torch.tensor(MISSING_LABEL if target is None else target, dtype=torch.long)
        if target is None:
            return torch.full((self.num_labels,), float(MISSING_LABEL), dtype=torch.float32)
        assert self.answer_vocab is not None
        if self.task == "multi_label":
            return vocab_lib.multi_hot(target, self.num_labels, self.answer_vocab.unk_index)
        return vocab_lib.dense_scores(target, self.num_labels)

    # -- image side ------------------------------------------------------------------------
    def _init_features(self) -> None:
        paths = self._split_paths("features")
        self.feature_readers: list[FeatureReader] = []
        for position, path in enumerate(paths):
            if not os.path.exists(path):
                raise self._missing_file_error("features", path, position)
            self.feature_readers.append(open_feature_reader(path))
        self._check_pairing(len(paths), "features")
        for entry in self.entries:
            reader = self._reader(entry)
            if reader.resolve(entry.feature_key or "") is None:
                raise DataError(
                    f"{entry.where}: its feature key {entry.feature_key!r} is not in {reader.path} "
                    f"({self.key}.features.{self.dataset_type}). The annotations and features do "
                    f"not belong together; fix the `features` path or regenerate the features."
                )
        first = self.entries[0]
        record = self._reader(first).read(first.feature_key or "")
        features, _ = pad_features(record, self.max_features, None, self._source(first))
        self.feature_dim = int(features.shape[1])

    def _init_images(self) -> None:
        paths = self._split_paths("images")
        self.image_dirs = paths
        for position, path in enumerate(paths):
            if not os.path.isdir(path):
                raise self._missing_file_error("images", path, position)
        self._check_pairing(len(paths), "images")
        params = ((self.config.get("processors", None) or {}).get("image_processor", None) or {}).get(
            "params", None
        ) or {}
        size = int(self.config.get("image_size", 224))
        resize = params.get("resize", size)
        self.image_transform = ImageTransform(
            resize=resize if isinstance(resize, int) else list(resize),
            crop_size=params.get("crop_size", size),
            mean=list(params.get("mean", IMAGENET_MEAN)),
            std=list(params.get("std", IMAGENET_STD)),
        )
        self.image_size = self.image_transform.output_size[0]
        self._image_file(self.entries[0])  # a wrong images path fails now, not in a worker

    def _check_pairing(self, count: int, kind: str) -> None:
        if count not in (1, len(self.annotation_files)):
            raise ConfigError(
                f"{self.key}.{kind}.{self.dataset_type} lists {count} entries for "
                f"{len(self.annotation_files)} annotation files; give one shared entry or one per file."
            )

    def _reader(self, entry: Entry) -> FeatureReader:
        readers = self.feature_readers
        return readers[entry.file_index] if len(readers) > 1 else readers[0]

    def _source(self, entry: Entry) -> str:
        return f"{self._reader(entry).path}, key {entry.feature_key!r}, for {entry.where}"

    def _image_file(self, entry: Entry) -> str:
        base = self.image_dirs[entry.file_index] if len(self.image_dirs) > 1 else self.image_dirs[0]
        path = find_image(base, entry.image_path or "")
        if path is None:
            raise DataError(
                f"{entry.where}: image {entry.image_path!r} not found under {base} (any of the "
                f"usual extensions; config key {self.key}.images.{self.dataset_type})."
            )
        return path

    def _build_info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            task=self.task,
            num_labels=self.num_labels,
            label_names=self.label_names,
            modality="features" if self.use_features else "pixels",
            feature_dim=self.feature_dim,
            max_features=self.max_features if self.use_features else 0,
            image_size=self.image_size,
            vocab_size=self.text_processor.vocab_size,
            max_seq_length=self.text_processor.max_seq_length,
            extra={
                "annotation_files": list(self.annotation_files),
                "has_targets": self.has_targets,
                "label_vocab_file": self.answer_vocab.source if self.answer_vocab else None,
            },
        )

    # -- torch Dataset ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def sample_indices(self) -> list[int]:
        """``sample_index`` of every item, in order (the index into the full split list)."""
        return [e.index for e in self.entries]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        entry = self.entries[idx]
        sample: dict[str, Any] = self.tokenized(idx, entry.text)
        if self.use_features:
            record = self._reader(entry).read(entry.feature_key or "")
            features, info = pad_features(record, self.max_features, self.feature_dim, self._source(entry))
            sample["image_feature_0"] = features
            if self.return_features_info:
                sample["image_info_0"] = info
        else:
            sample["image"] = self.image_transform(load_image(self._image_file(entry)))
        sample["targets"] = self.make_targets(entry.target)
        sample["id"] = entry.sample_id
        sample["sample_index"] = torch.tensor(entry.index, dtype=torch.long)
        sample["dataset_name"] = self.name
        sample["dataset_type"] = self.dataset_type
        return sample

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]] | CollatedBatch:
        """A batch for torch's fetcher: from the split kept in memory when the policy allows
        (benchmark/data/in_memory.py), else sample by sample."""
        if self.in_memory is not None and not self._kept:
            self._keep_in_memory()
        if self._tensors is not None:
            return self._tensors.batch_of(indices)
        return [self[i] for i in indices]

    def _keep_in_memory(self) -> None:
        from benchmark.data.build import trim_padding

        self._kept = True
        assert self.in_memory is not None
        first = self[0]
        if not self.in_memory.keeps(first, len(self)):
            return
        store = self.split_store
        path = store.path(self) if store is not None else None
        stored = store.load(path, self.sample_indices) if store is not None and path is not None else None
        if stored is not None:
            self._tensors = SplitTensors(stored)
            return
        self.tokenized.prepare([entry.text for entry in self.entries])
        self._tensors = SplitTensors.from_samples([first, *(self[i] for i in range(1, len(self)))], trim_padding)
        if store is not None and path is not None:
            store.save(path, self._tensors.batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, size={len(self)})"
