"""``msd grid …`` and ``msd wandb …``: typer sub-apps mounted by :mod:`benchmark.cli`.

Extra ``key=value`` arguments after the options are MMF overrides appended to every cell
(``msd grid run experiments/table2.yaml env.save_dir=/scratch/runs``), exactly as on
``msd run``'s command line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

from benchmark.grid.spec import DEFAULT_SCALE, GridError

grid_app = typer.Typer(no_args_is_help=True, help="Experiment grids: expand, show status, run (local or Slurm).")
wandb_app = typer.Typer(no_args_is_help=True, help="Weights & Biases: upload offline runs.")
console = Console()
err_console = Console(stderr=True)
_MMF_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

FILE_ARG = typer.Argument(..., help="Grid file, e.g. experiments/table2.yaml.")
SCALE_OPT = typer.Option(DEFAULT_SCALE, "--scale", "-s", help="A scale of the grid file (e.g. smoke).")
ONLY_OPT = typer.Option(None, "--only", help="Glob(s) over cell names, comma-separated: 'hateful_memes/*'.")


def _expand(file: Path, scale: str, args: list[str]):
    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid

    return expand(load_grid(file, scale), args)


@grid_app.command("show", context_settings=_MMF_ARGS)
def show(ctx: typer.Context, file: Path = FILE_ARG, scale: str = SCALE_OPT, only: str | None = ONLY_OPT,
         commands: bool = typer.Option(False, "--commands", help="Print each cell's `msd run` line instead.")) -> None:
    """List the cells of a grid with their status (done / running / failed / partial / todo / blocked)."""
    from benchmark.grid.status import grid_status, status_table

    grid = _expand(file, scale, list(ctx.args))
    cells = grid.select(only)
    if commands:
        for cell in cells:
            console.print(f"# {cell.name}\n{cell.command()}", markup=False, highlight=False, soft_wrap=True)
        return
    console.print(status_table(grid, grid_status(grid, cells)))


@grid_app.command("run", context_settings=_MMF_ARGS)
def run(
    ctx: typer.Context,
    file: Path = FILE_ARG,
    scale: str = SCALE_OPT,
    only: str | None = ONLY_OPT,
    workers: int | None = typer.Option(None, "--workers", "-w", min=1,
                                       help="Parallel cells (local: default cores // threads; slurm: max jobs at once)."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="Torch threads per cell (local default: 1, whatever the cores: the thread count changes the numbers, docs/reproducibility.md)."),
    launcher: str = typer.Option("local", "--launcher", "-l", help="local | slurm"),
    cluster: str = typer.Option("slurm", "--cluster", help="slurm launcher only: submitit cluster (slurm, or local to test)."),
    partition: str | None = typer.Option(None, "--partition", help="slurm launcher only: override the YAML's partition."),
    start: str | None = typer.Option(None, "--start", help="local launcher only: forkserver (fast, default) | exec (fresh interpreter per cell)."),
    retries: int = typer.Option(0, "--retries", min=0, help="Re-launch a cell killed from outside (OOM, preemption) this often."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress view on a terminal."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the tasks in order and exit."),
) -> None:
    """Run a grid: data -> teachers -> teacher caches -> students; complete cells are skipped."""
    if not dry_run:  # nothing to do? answered from the last complete run's stamp, before torch loads
        from benchmark.grid import finished

        record = finished.check_stamp(finished.stamp_key(file, scale, only, list(ctx.args)), list(ctx.args))
        if record is not None:
            console.print(finished.report_line(record), highlight=False)
            raise typer.Exit(0)
    from benchmark.grid.runner import print_report, run_grid

    if dry_run:
        from benchmark.grid.dag import build_plan

        plan = build_plan(_expand(file, scale, list(ctx.args)), only)
        for task in plan.tasks.values():
            deps = ", ".join(plan.tasks[d].label for d in task.deps) or "-"
            console.print(f"{task.kind:>5}  {task.label}  [dim](after: {deps})[/dim]", highlight=False)
        return
    options = {"cluster": cluster, "partition": partition} if launcher == "slurm" else {"start": start}
    report = run_grid(file, scale=scale, only=only, extra_args=list(ctx.args), launcher=launcher, workers=workers,
                      threads=threads, retries=retries, live=progress, console=err_console, **options)
    print_report(console, report)
    raise typer.Exit(report.exit_code)


@grid_app.command("plan", context_settings=_MMF_ARGS)
def plan(
    ctx: typer.Context,
    file: Path = FILE_ARG,
    scale: str = SCALE_OPT,
    only: str | None = ONLY_OPT,
    step_times: Path | None = typer.Option(None, "--step-times", help="JSON of step times measured elsewhere "
                                           "(e.g. on a GPU node with --save-step-times); probes it lacks are measured here."),
    save_step_times: Path | None = typer.Option(None, "--save-step-times", help="Write the step times used to this JSON."),
    device: str = typer.Option("auto", "--device", help="Where to measure step times: auto | cpu | cuda."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads while measuring on a CPU."),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps per probe (the median is used), after 2 warm-up steps."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the plan (rows, totals, assumptions) as JSON."),
) -> None:
    """Updates and device hours of every cell, from measured step times and the dataset sizes."""
    import json

    from benchmark.grid.plan import build_cost_plan, render
    from benchmark.grid.plan_timing import save_step_times as write_step_times

    cost = build_cost_plan(file, scale, list(ctx.args), only, step_times=step_times, device=device, threads=threads,
                           repeats=steps, log=lambda line: err_console.print(line, style="dim", highlight=False))
    # A file or a pipe gets whole rows rather than rich's 80-column default.
    render(cost, console if console.is_terminal else Console(width=max(console.width, 180)))
    if save_step_times:
        err_console.print(f"step times written to {write_step_times(save_step_times, cost.device, cost.step_times)}")
    if json_out:
        tmp = json_out.with_name(f".{json_out.name}.tmp")  # complete or absent, never half-written
        tmp.write_text(json.dumps(cost.to_dict(), indent=2) + "\n")
        tmp.replace(json_out)


@wandb_app.command("sync")
def sync(
    directory: Path | None = typer.Argument(None, help="Where the offline runs are (default: tracking.wandb.dir or $WANDB_DIR)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the offline runs without uploading."),
    include_synced: bool = typer.Option(False, "--include-synced", help="Upload runs already synced too."),
) -> None:
    """Upload offline W&B runs (needs `wandb login` or WANDB_API_KEY): wraps `wandb sync`."""
    runs = find_offline_runs(directory)
    if not runs:
        raise GridError(f"No offline W&B runs (offline-run-*) under {directory or default_wandb_root()}.")
    from benchmark.tracking.wandb_logger import sync_waves

    waves = sync_waves(runs)  # teachers, then caches, then students: artifacts before their users
    for what, paths in waves:
        console.print(f"{what}:", highlight=False)
        for path in paths:
            console.print(f"  {path}", highlight=False, soft_wrap=True)
    if dry_run:
        return
    for _, paths in waves:
        code = subprocess.call([sys.executable, "-m", "wandb", "sync", *(["--include-synced"] if include_synced else []),
                                *map(str, paths)])
        if code:
            raise typer.Exit(code)


def default_wandb_root() -> Path:
    import os

    from benchmark.config.loader import build_config

    if os.environ.get("WANDB_DIR"):
        return Path(os.environ["WANDB_DIR"])
    return Path(str(build_config([]).tracking.wandb.dir or "."))


def find_offline_runs(directory: Path | None) -> list[Path]:
    """``offline-run-*`` folders under ``DIR``, ``DIR/wandb`` (W&B's own layout) or the default."""
    root = Path(directory) if directory else default_wandb_root()
    found: list[Path] = []
    for base in (root, root / "wandb"):
        if base.is_dir():
            found += sorted(p for p in base.glob("offline-run-*") if p.is_dir())
    return found
