"""Progress in a log: one plain line per evaluation when the console is not a terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from benchmark.tracking.progress import TrainingProgress


def _run(console: Console) -> None:
    with TrainingProgress("hm-teacher-abc123", total=40, console=console) as bar:
        bar.advance_to(0)
        for step in range(1, 41):
            bar.update(step, loss=1.0 / step)
            if step % 20 == 0:
                bar.update(step, metric=0.5 + step / 100, epoch=step / 20)


def test_a_non_terminal_stream_gets_one_plain_line_per_evaluation():
    stream = io.StringIO()
    _run(Console(file=stream, force_terminal=False, width=80))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    pattern = (r"^hm-teacher-abc123  update (\d+)/40 \((\d+)%\)  epoch (\d\.\d\d)  loss (\d\.\d{4})  "
               r"val (\d\.\d{4})  elapsed \d+:\d\d:\d\d  eta (\d+:\d\d:\d\d)$")
    first, second = (re.match(pattern, line) for line in lines)
    assert first and second, lines  # whole lines, never cut at 80 columns
    assert first.groups()[:5] == ("20", "50", "1.00", "0.0500", "0.7000")
    assert second.groups()[:5] == ("40", "100", "2.00", "0.0250", "0.9000")
    assert second.group(6) == "0:00:00"  # nothing left to do
    assert "\x1b[" not in stream.getvalue() and "\r" not in stream.getvalue()  # no bar, no escape codes


def test_a_terminal_keeps_the_live_bar():
    stream = io.StringIO()
    progress = TrainingProgress("run", total=10, console=Console(file=stream, force_terminal=True, width=100))
    assert not progress.plain and progress._progress is not None


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    with TrainingProgress("run", total=10, enabled=False, console=Console(file=stream)) as bar:
        bar.update(5, metric=0.5, epoch=1.0)
    assert stream.getvalue() == ""


def test_elapsed_and_eta_count_only_this_processs_updates(monkeypatch):
    """A run resumed at update 100 of 400 that took 30 s for 50 updates has 250 left: 150 s."""
    clock = iter([1000.0, 1030.0])
    monkeypatch.setattr("benchmark.tracking.progress.time.monotonic", lambda: next(clock))
    stream = io.StringIO()
    with TrainingProgress("r", total=400, console=Console(file=stream, force_terminal=False)) as bar:
        bar.advance_to(100)
        bar.update(150, loss=0.5, metric=0.6, epoch=3.0)
    assert stream.getvalue().rstrip().endswith("elapsed 0:00:30  eta 0:02:30")
