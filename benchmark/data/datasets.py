"""The registered datasets: how each MMF record format names its text, image and label.

Field names follow MMF's dataset builders (``mmf/datasets/builders/<name>/dataset.py``), so
an MMF data directory reads unchanged; see docs/mmf_formats.md §4 for the formats.
"""

from __future__ import annotations

from typing import Any

from benchmark.data.base import MMFDataset
from benchmark.registry import registry


@registry.register_dataset("hateful_memes")
class HatefulMemesDataset(MMFDataset):
    """``{"id", "img": "img/42953.png", "text", "label"}``; test files may omit ``label``."""

    dataset_name = "hateful_memes"

    def get_id(self, record: dict[str, Any], index: int) -> int | str:
        return int(record["id"])

    def get_image_path(self, record: dict[str, Any]) -> str:
        return str(record["img"])

    def get_feature_key(self, record: dict[str, Any]) -> str:
        # MMF: "img/02345.png" -> "02345", which the LMDB lookup turns into "2345" or "02345".
        return str(record["img"]).split("/")[-1].split(".")[0]


@registry.register_dataset("mmimdb")
class MMIMDbDataset(MMFDataset):
    """``{"id", "img"|"image_name"|"image_id", "genres": [...], "plot": str | [str, ...]}``.

    Only the first plot summary is used, as in MMF; genres become a multi-hot vector over
    the class file (``<unk>`` column zeroed).
    """

    dataset_name = "mmimdb"

    def get_text(self, record: dict[str, Any]) -> str:
        plot = record["plot"]
        if isinstance(plot, (list, tuple)):
            plot = plot[0] if plot else ""
        return str(plot)

    def get_id(self, record: dict[str, Any], index: int) -> int | str:
        return str(record["id"])  # "0000008": the leading zeros are part of the IMDb id

    def get_label(self, record: dict[str, Any]) -> Any:
        return record.get("genres")


@registry.register_dataset("visual_entailment")
class VisualEntailmentDataset(MMFDataset):
    """SNLI-VE: ``{"Flikr30kID", "sentence2", "gold_label", "pairID", ...}``.

    The Flickr30k image stands in for the premise, so ``sentence1`` is not read; labels map
    entailment/neutral/contradiction to 0/1/2 through the config's ``label_names``.
    """

    dataset_name = "visual_entailment"

    def get_text(self, record: dict[str, Any]) -> str:
        return str(record["sentence2"])

    def get_id(self, record: dict[str, Any], index: int) -> int | str:
        return str(record.get("pairID", index))

    def get_label(self, record: dict[str, Any]) -> Any:
        return record.get("gold_label")

    def get_image_path(self, record: dict[str, Any]) -> str:
        image = record.get("Flikr30kID", record.get("Flickr30kID"))
        if image is None:
            raise KeyError("Flikr30kID")
        return str(image)

    def get_feature_key(self, record: dict[str, Any]) -> str:
        return self.get_image_path(record).split(".")[0]  # "2248275918.jpg" -> "2248275918"


@registry.register_dataset("vqa2")
class VQA2Dataset(MMFDataset):
    """imdb ``.npy`` records: ``question_str``/``question``, ``answers``, ``feature_path``/``image_name``.

    Targets are VQA soft scores over the answer vocabulary; test2015 records carry no
    answers, which is why the suite evaluates on val2014.
    """

    dataset_name = "vqa2"

    def get_text(self, record: dict[str, Any]) -> str:
        for key in ("question_str", "question"):
            if record.get(key) is not None:
                return str(record[key])
        if record.get("question_tokens") is not None:
            return " ".join(map(str, record["question_tokens"]))
        raise KeyError("question_str")

    def get_id(self, record: dict[str, Any], index: int) -> int | str:
        return int(record["question_id"])

    def get_label(self, record: dict[str, Any]) -> Any:
        return record.get("answers")


@registry.register_dataset("easy_vqa")
class EasyVQADataset(VQA2Dataset):
    """easy-VQA in the VQA2 imdb format, read as 64x64 PNG pixels instead of region features."""

    dataset_name = "easy_vqa"
