"""Answer and class vocabularies, and the targets built from them, as MMF defines them.

MMF's ``VocabDict`` prepends ``<unk>`` unless the file has it, and maps every word outside
the file to it; VQA and MM-IMDb targets then zero the ``<unk>`` column. Reproducing those
details matters because they fix the number of outputs (3,129 for VQA2, 24 for MM-IMDb) and
the VQA accuracy a model can reach.
"""

from __future__ import annotations

import numbers
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from benchmark.errors import DataError

UNK_TOKEN = "<unk>"
NUM_VQA_ANSWERS = 10


def load_str_list(path: str | os.PathLike[str]) -> list[str]:
    """Lines of a vocabulary file, stripped (kept in order: the index is the line)."""
    if not os.path.isfile(path):
        raise DataError(
            f"Vocabulary file {path} does not exist. Check the answer/class vocab path under "
            f"processors.answer_processor.params.vocab_file and `data_dir` in the config."
        )
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle.read().splitlines()]


def word_tokenize(word: str) -> str:
    """MMF's ``simple_word`` preprocessor: lowercase, drop ',' and '?', split off "'s"."""
    word = str(word).lower()
    for char in (",", "?"):
        word = word.replace(char, "")
    return word.replace("'s", " 's").strip()


class VocabDict:
    """Word <-> index with ``<unk>`` (index 0 when it had to be added) for unknown words."""

    def __init__(self, words: Iterable[str], source: str = "") -> None:
        word_list = list(words)
        if UNK_TOKEN not in word_list:
            word_list = [UNK_TOKEN, *word_list]
        self.word_list = word_list
        self.source = source
        self.stoi: dict[str, int] = {}
        for index, word in enumerate(word_list):
            self.stoi.setdefault(word, index)  # first occurrence wins, as in a dict build
        self.unk_index = self.stoi[UNK_TOKEN]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VocabDict:
        words = load_str_list(path)
        if not [w for w in words if w]:
            raise DataError(f"Vocabulary file {path} is empty; it must list one answer/class per line.")
        return cls(words, source=os.fspath(path))

    def __len__(self) -> int:
        return len(self.word_list)

    def word2idx(self, word: str) -> int:
        return self.stoi.get(word, self.unk_index)

    def idx2word(self, index: int) -> str:
        return self.word_list[index]


def answer_indices(answers: Sequence[Any], vocab: VocabDict) -> list[int]:
    """VQA answers -> ten vocabulary indices (MMF repeats a short list up to ten)."""
    tokens = [word_tokenize(a) for a in answers]
    if tokens:
        while len(tokens) < NUM_VQA_ANSWERS:
            tokens += tokens[: NUM_VQA_ANSWERS - len(tokens)]
    indices = [vocab.word2idx(t) for t in tokens]
    indices += [vocab.unk_index] * (NUM_VQA_ANSWERS - len(indices))
    return indices


def vqa_answer_scores(indices: Sequence[int], unk_index: int) -> dict[int, float]:
    """Official VQA soft score per answer index (MMF's ``compute_answers_scores``).

    For each annotator, count how many of the *other* annotators gave the answer and take
    min(1, count / 3); the score is the mean over annotators. With ``c`` of ``n`` votes
    that is ``(c * min(1, (c-1)/3) + (n-c) * min(1, c/3)) / n``. ``<unk>`` gets no score.
    """
    total = len(indices)
    if total == 0:
        return {}
    scores: dict[int, float] = {}
    for index, count in Counter(int(i) for i in indices).items():
        if index == unk_index:
            continue
        agree = count * min(1.0, (count - 1) / 3.0)
        others = (total - count) * min(1.0, count / 3.0)
        scores[index] = (agree + others) / total
    return scores


def dense_scores(scores: dict[int, float], num_labels: int) -> torch.Tensor:
    """The FloatTensor [num_labels] target from sparse index -> score pairs."""
    target = torch.zeros(num_labels, dtype=torch.float32)
    for index, value in scores.items():
        target[index] = value
    return target


def multi_hot_indices(labels: Sequence[Any], vocab: VocabDict) -> list[int]:
    """MM-IMDb genres -> class indices; unknown genres map to ``<unk>`` (zeroed later)."""
    return sorted({vocab.word2idx(word_tokenize(label)) for label in labels})


def multi_hot(indices: Sequence[int], num_labels: int, unk_index: int | None) -> torch.Tensor:
    """FloatTensor [num_labels] with 1 at ``indices`` and 0 at ``<unk>`` (MMF's processor)."""
    target = torch.zeros(num_labels, dtype=torch.float32)
    if len(indices):
        target[list(indices)] = 1.0
    if unk_index is not None:
        target[unk_index] = 0.0
    return target


def single_label_index(label: Any, label_names: Sequence[str], where: str) -> int:
    """An int class index from an int label or a label name; anything else is a DataError."""
    num_labels = len(label_names)
    index: int | None = None
    if isinstance(label, str):
        if label in label_names:
            index = list(label_names).index(label)
        elif label.strip().lstrip("-").isdigit():
            index = int(label)
    elif isinstance(label, numbers.Integral):
        index = int(label)
    elif isinstance(label, numbers.Real) and float(label).is_integer():
        index = int(label)  # 1.0 from a JSON writer that emits floats
    if index is None or not 0 <= index < num_labels:
        raise DataError(
            f"{where}: label {label!r} is outside the label set "
            f"{{{', '.join(f'{i}={n}' for i, n in enumerate(label_names))}}}. Fix the "
            f"annotation, or the dataset's label_names / num_labels in the config."
        )
    return index
