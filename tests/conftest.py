"""Helpers shared by test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A config's default cache folder is ``results/cache`` under the working directory: tests
    that build datasets or teachers from the defaults would write stored splits and fingerprint
    sidecars into the checkout. They get a temporary one (fixtures that set their own win)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


class InterruptAfterUpdate:
    """A run callback that interrupts the run like Ctrl-C right after update ``step`` was
    logged (so a checkpoint and the logs of the updates before it exist)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_start(self, run, config) -> None: ...

    def on_finish(self, summary) -> None: ...

    def on_log(self, record, step) -> None:
        if step == self.step and record["type"] == "train":
            raise KeyboardInterrupt


@pytest.fixture(scope="session")
def interrupt_after_update():
    """``interrupt_after_update(3)`` -> a callback that stops a run after its third update."""
    return InterruptAfterUpdate
