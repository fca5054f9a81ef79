"""A tiny synthetic dataset and isolated run/cache dirs shared by the end-to-end tests."""

from pathlib import Path

import pytest

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in ("hateful_memes", "mmimdb"):
        make_dataset(name, root, size=160, seed=0)
    return root


@pytest.fixture
def make_config(tiny_data, tmp_path):
    """``make_config(*mmf_args)`` -> resolved config writing into this test's tmp dirs."""

    def _make(*args: str, save_dir: Path | None = None):
        return build_config(
            [
                f"env.data_dir={tiny_data}",
                f"env.save_dir={save_dir or tmp_path / 'runs'}",
                f"env.cache_dir={tmp_path / 'cache'}",
                "training.max_epochs=2",
                "training.batch_size=32",
                "training.threads=1",
                *args,
            ]
        )

    return _make
