"""``msd cost …``: the cost of finished runs (a typer sub-app mounted by :mod:`benchmark.cli`).

``msd cost remeasure <grid.yaml>`` measures the latency and memory of a grid's finished runs
again, interleaved, on a quiet machine (:mod:`benchmark.train.cost_remeasure`;
docs/efficiency.md, "Re-measuring on a quiet machine"). Extra ``key=value`` arguments are the
grid's MMF overrides, as on ``msd grid run`` and ``msd robustness``, so the same cells (and run
ids) are found.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

cost_app = typer.Typer(no_args_is_help=True, help="The cost of finished runs: re-measure latency on a quiet machine.")
console = Console()
err_console = Console(stderr=True)
_MMF_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


class RoundProgress:
    """One line per interleaved round: a live rich bar on a terminal, plain lines in a log
    (as the training progress does: a redrawn bar collapses to one line in a file)."""

    def __init__(self, rounds: int, console: Console) -> None:
        self.rounds = rounds
        self.console = console
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> RoundProgress:
        if self.live:
            self._progress = Progress(TextColumn("[bold]interleaved rounds"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("rounds", total=self.rounds)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, index: int, order: list[str], seconds: float) -> str:
        from benchmark.train.cost_remeasure import load_average

        load = load_average()
        return (f"round {index + 1}/{self.rounds}: {len(order)} run(s) in {seconds:.1f} s"
                f" (elapsed {time.monotonic() - self._started:.1f} s, load {load[0] if load else 'n/a'})")

    def __call__(self, index: int, order: list[str], seconds: float) -> None:
        text = self.line(index, order, seconds)
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
            self._progress.update(self._task, completed=index + 1)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)


@cost_app.command("remeasure", context_settings=_MMF_ARGS)
def remeasure(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Grid file, e.g. experiments/efficiency.yaml."),
    scale: str = typer.Option("default", "--scale", "-s", help="A scale of the grid file (e.g. smoke)."),
    rounds: int = typer.Option(7, "--rounds", help="Interleaved rounds (each run gets one timed block per round)."),
    repeats: int = typer.Option(5, "--repeats", help="Timed calls per batch size in each block."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed calls before each block."),
    batch_sizes: str = typer.Option("1,64", "--batch-sizes", help="Comma-separated batch sizes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the round orders."),
    only: str | None = typer.Option(None, "--only", help="Glob(s) over cell names, comma-separated (only those "
                                    "cells: their teachers are not added)."),
    only_missing: bool = typer.Option(True, "--only-missing/--force",
                                      help="Skip runs that already have cost_remeasured.json (default), or measure all."),
) -> None:
    """Re-measure the CPU latency and memory of every finished run of a grid, interleaved, into
    <run>/cost_remeasured.json (msd analyze efficiency prefers it): docs/efficiency.md"""
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid
    from benchmark.train.cost_remeasure import remeasure_grid, remeasure_settings

    settings = remeasure_settings(rounds, repeats, warmup, batch_sizes, seed)  # bad options fail before the grid loads
    grid = expand(load_grid(file, scale), list(ctx.args))
    announce = lambda m: err_console.print(m, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    with RoundProgress(settings.rounds, err_console) as progress:
        outcome = remeasure_grid(grid.select(only, with_teachers=False), settings, force=not only_missing, announce=announce,
                                 on_round=progress)
    for line in outcome.not_finished:
        announce(f"{line}: not re-measured (train it with `msd grid run` first)")
    if outcome.measured:
        announce(f"load average {outcome.load_start} at start, {outcome.load_end} at end "
                 f"(1/5/15 min, {len(outcome.measured)} run(s), {outcome.seconds:.1f} s)")
    console.print(f"msd cost remeasure: {len(outcome.measured)} measured, {len(outcome.skipped)} skipped "
                  f"(already measured), {len(outcome.not_finished)} not finished; wrote "
                  f"{len(outcome.paths)} cost_remeasured.json", highlight=False)
