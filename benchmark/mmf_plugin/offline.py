"""``python -m benchmark.mmf_plugin.offline <env.data_dir>``: the tokenizer folder the offline
configs name (``configs/offline/<dataset>/data.yaml``: ``${env.data_dir}/msd_tokenizer``).

Why: MMF's text processors load ``tokenizer_config.type`` with ``AutoTokenizer.from_pretrained``,
which wants a hub name (a download) or a folder with ``vocab.txt`` and ``tokenizer_config.json``.
This writes that folder from the suite's own WordPiece vocabulary (the one its datasets are
tokenized with), so MMF and the suite produce the same token ids, offline.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.data.tokenizer import default_vocab_file

FOLDER = "msd_tokenizer"
TOKENIZER_CONFIG = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}


def write_tokenizer(data_dir: str | Path) -> Path:
    """``<data_dir>/msd_tokenizer/{vocab.txt, tokenizer_config.json}``; returns the folder."""
    folder = Path(data_dir).expanduser() / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_bytes(Path(default_vocab_file()).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmark.mmf_plugin.offline <env.data_dir>", file=sys.stderr)
        return 2
    print(f"wrote {write_tokenizer(args[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
