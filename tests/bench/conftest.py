"""The benchmarks run as scripts (``python bench/x.py``) with ``bench/`` on ``sys.path``; the
tests import their helpers the same way."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
