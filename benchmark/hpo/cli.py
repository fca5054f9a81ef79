"""``msd hpo …``: hyper-parameter searches (a typer sub-app mounted by :mod:`benchmark.cli`).

Extra ``key=value`` arguments after the options are MMF overrides applied to every trial and
to an ``auto`` teacher (``msd hpo run FILE env.save_dir=/scratch/runs``), as on ``msd grid run``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from benchmark.errors import UserError

hpo_app = typer.Typer(no_args_is_help=True, help="Hyper-parameter searches (Optuna): run, compare, best config, plots.")
console = Console()
_MMF_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
STORAGE_OPT = typer.Option(None, "--storage", help="Study storage URL (default sqlite:///results/hpo/<study>.db; "
                                                   "postgresql+psycopg2://…, journal:PATH).")


def _log(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _sigterm_as_interrupt() -> None:
    """``kill``/Slurm/timeout send SIGTERM: handle it like Ctrl-C, so the running trial is
    recorded as interrupted (and retried) instead of left RUNNING."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C / SIGTERM end the command with one line and exit status 130, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        _log("interrupted: the running trial is marked FAIL (interrupted); the same command continues the "
             "study and retries it, resuming its run from the last checkpoint")
        raise typer.Exit(130) from None


@hpo_app.command("run", context_settings=_MMF_ARGS)
def run(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Search file, e.g. experiments/hpo/msd_hateful_memes.yaml."),
    trials: int | None = typer.Option(None, "--trials", "-n", min=1, help="Trials in the study (overrides budget.trials)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop starting trials after S seconds (per process)."),
    cpu_seconds: float | None = typer.Option(None, "--cpu-seconds", help="Budget in CPU-seconds summed over trials."),
    storage: str | None = STORAGE_OPT,
    study: str | None = typer.Option(None, "--study", help="Study name (default: the search file's name)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes sharing the study."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads per trial (default 1 with several workers, as the grid's)."),
    scale: str | None = typer.Option(None, "--scale", "-s", help="A scale of the search file (e.g. smoke)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write figures to results/figures/hpo/<study>/."),
    wandb: bool = typer.Option(True, "--wandb/--no-wandb", help="Log every trial to W&B (group = study)."),
    worker_index: int | None = typer.Option(None, "--worker-index", hidden=True),
) -> None:
    """Run (or continue) a search until the study's budget is used; print the best config."""
    from benchmark.hpo.spec import load_search
    from benchmark.hpo.study import run_search

    _sigterm_as_interrupt()
    spec = load_search(file, scale)
    budget = spec.budget.replace(trials=trials, timeout_s=timeout, cpu_s=cpu_seconds)
    with _interruptible():
        report = run_search(spec, budget=budget, storage=storage, study_name=study, workers=workers,
                            threads=threads, extra_args=list(ctx.args), worker_index=worker_index, wandb=wandb,
                            log=_log)
    if worker_index is not None:
        return
    from optuna.trial import TrialState

    _log(f"study {report.study}: {len(report.trials)} trials — {report.count(TrialState.COMPLETE)} complete, "
         f"{report.count(TrialState.PRUNED)} pruned, {report.count(TrialState.FAIL)} failed; "
         f"{report.cpu_s:.0f} CPU-s in trials, {report.wall_s:.0f} s wall for this command")
    _print_best(report.study, report.storage, write=True)
    if plots:
        _plot(report.study, report.storage, None)


@hpo_app.command("best")
def best(
    study: str = typer.Argument(..., help="Study name."),
    storage: str | None = STORAGE_OPT,
    out: Path | None = typer.Option(None, "--out", help="YAML to write (default results/hpo/<study>.best.yaml)."),
) -> None:
    """Print the best trial's config as a `key=value` line and write it as YAML."""
    from benchmark.hpo.study import load_existing

    loaded, url = load_existing(study, storage)
    _print_best(loaded.study_name, url, write=True, out=out, study_obj=loaded)


@hpo_app.command("show")
def show(study: str = typer.Argument(..., help="Study name."), storage: str | None = STORAGE_OPT) -> None:
    """Every trial of a study: state, value, parameters, run id."""
    from benchmark.hpo.study import describe_trial, load_existing

    loaded, url = load_existing(study, storage)
    from benchmark.hpo.storage import safe_url

    _log(f"study {study} in {safe_url(url)}: {loaded.user_attrs.get('search_file', '')}")
    for trial in loaded.get_trials(deepcopy=False):
        _log(describe_trial(trial))


@hpo_app.command("plot")
def plot(
    study: str = typer.Argument(..., help="Study name."),
    storage: str | None = STORAGE_OPT,
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Default results/figures/hpo."),
) -> None:
    """Optimisation history, parameter importances, parallel coordinates, intermediate values."""
    from benchmark.hpo.storage import resolve_url

    _plot(study, resolve_url(study, storage), out_dir)


@hpo_app.command("compare", context_settings=_MMF_ARGS)
def compare(
    files: list[str] = typer.Argument(..., help="Search files, one per method (and key=value overrides)."),
    trials: int | None = typer.Option(None, "--trials", "-n", min=1, help="Same number of trials for every method."),
    cpu_seconds: float | None = typer.Option(None, "--cpu-seconds", help="Same CPU-seconds for every method."),
    scale: str | None = typer.Option(None, "--scale", "-s", help="A scale of the search files."),
    storage: str | None = STORAGE_OPT,
    out_dir: Path = typer.Option(Path("results/tables"), "--out-dir", help="Where hpo_fairness.{csv,md} go."),
    wandb: bool = typer.Option(True, "--wandb/--no-wandb", help="Log every trial to W&B."),
) -> None:
    """Equal-budget searches for several methods -> results/tables/hpo_fairness.{csv,md}."""
    from benchmark.hpo.compare import run_comparison, write_table

    _sigterm_as_interrupt()
    paths = [f for f in files if "=" not in f]
    overrides = [f for f in files if "=" in f]
    with _interruptible():
        frame = run_comparison(paths, trials=trials, cpu_s=cpu_seconds, scale=scale, storage=storage,
                               extra_args=overrides, wandb=wandb, log=_log)
    csv_path, md_path = write_table(frame, out_dir)
    columns = ("method", "best_value", "best_trial", "trials_used", "complete", "pruned", "failed", "cpu_s", "wall_s")
    table = Table(*columns, title=f"Equal budgets ({frame['budget'].iloc[0]})")
    for _, row in frame.iterrows():
        table.add_row(*["-" if row[c] is None else f"{row[c]:.4f}" if c == "best_value" else str(row[c]) for c in columns])
    console.print(table)
    _log(f"wrote {csv_path} and {md_path}")


@hpo_app.command("dashboard")
def dashboard(
    target: str = typer.Argument(..., metavar="STUDY_OR_STORAGE",
                                 help="A study name (results/hpo/<study>.db, or --storage) or a storage URL/file."),
    storage: str | None = STORAGE_OPT,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: any free one)."),
) -> None:
    """Serve optuna-dashboard on a study's storage until Ctrl-C; prints its URL."""
    from benchmark.hpo.dashboard import make_dashboard, resolve_target, serve_until_signal

    server, url = make_dashboard(resolve_target(target, storage), host, port)
    _log(f"optuna-dashboard: {url}  (Ctrl-C to stop)")
    serve_until_signal(server)
    _log("dashboard stopped")


@hpo_app.command("grid")
def grid(
    studies: list[str] = typer.Argument(..., help="Studies whose best trials become grid cells."),
    storage: str | None = STORAGE_OPT,
    seeds: str = typer.Option("0,1,2", "--seeds", help="Seeds of every tuned cell."),
    out: Path = typer.Option(Path("experiments/table2_tuned.yaml"), "--out", help="Grid file to write."),
    name: str = typer.Option("table2_tuned", "--name", help="Grid name (W&B group)."),
) -> None:
    """Write a grid file whose cells use each study's best values (experiments/table2_tuned.yaml)."""
    from benchmark.hpo.best import best_config, tuned_grid, write_tuned_grid
    from benchmark.hpo.study import load_existing

    bests = []
    for study in studies:
        loaded, url = load_existing(study, storage)
        bests.append(best_config(loaded, url))
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}.") from exc
    path = write_tuned_grid(tuned_grid(bests, seed_list, name), out)
    _log(f"wrote {path}: {len(bests)} tuned cell(s) x {len(seed_list)} seed(s); run it with `msd grid run {path}`")


def _print_best(study: str, url: str, *, write: bool, out: Path | None = None, study_obj: object = None) -> None:
    from benchmark.hpo.best import best_config, write_best
    from benchmark.hpo.storage import hpo_dir
    from benchmark.hpo.study import load_existing

    loaded = study_obj if study_obj is not None else load_existing(study, url)[0]
    try:
        best_cfg = best_config(loaded, url)  # type: ignore[arg-type]
    except UserError as exc:
        _log(str(exc))
        return
    values = ", ".join(f"{m} = {v:.4f}" for (m, _), v in zip(best_cfg.objectives, best_cfg.values))
    pareto = f" (one of {best_cfg.pareto_size} Pareto-optimal trials)" if best_cfg.pareto_size > 1 else ""
    _log(f"best trial {best_cfg.trial}{pareto}: {values}; run {best_cfg.run_id}")
    _log("best config:")
    console.print(best_cfg.line(), markup=False, highlight=False, soft_wrap=True)
    if write:
        path = write_best(best_cfg, out or hpo_dir() / f"{study}.best.yaml")
        _log(f"wrote {path}")


def _plot(study: str, url: str, out_dir: Path | None) -> None:
    from benchmark.hpo.plots import write_plots
    from benchmark.hpo.study import load_existing

    loaded, _ = load_existing(study, url)
    written, skipped = write_plots(loaded, out_dir)
    for path in written:
        _log(f"figure: {path}")
    for reason in skipped:
        _log(f"figure skipped: {reason}")
