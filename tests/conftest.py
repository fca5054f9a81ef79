"""Helpers shared by test packages."""

from __future__ import annotations

import pytest


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
