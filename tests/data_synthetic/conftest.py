"""Small synthetic datasets generated once per session (sizes kept tiny for speed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from benchmark.data.make import make_dataset

# Test modules import the helpers as ``synth_helpers`` (pytest puts their folder on sys.path
# when it imports them); the conftest is imported earlier, so it adds the folder itself.
sys.path.insert(0, str(Path(__file__).parent))
from synth_helpers import SIZE, SYNTHETIC  # noqa: E402


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """``(data_dir, {name: summary})`` with every synthetic dataset at size 60, seed 0."""
    root = tmp_path_factory.mktemp("synth")
    return root, {name: make_dataset(name, root, size=SIZE, seed=0) for name in SYNTHETIC}
