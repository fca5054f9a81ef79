"""The ``msd`` command.

``msd run`` takes MMF's grammar (``config=… model=… dataset=… key=value``); the other
sub-commands are ordinary options. Errors a user can cause are printed as one paragraph
without a traceback (set ``MSD_DEBUG=1`` to see it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from analysis.cli import analyze_app
from benchmark.errors import UserError
from benchmark.grid.cli import grid_app, wandb_app
from benchmark.hpo.cli import hpo_app
from benchmark.train.cost_cli import cost_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="MSD benchmark suite (MMF-style).")
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect datasets in MMF's layout.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the resolved configuration.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect the run store.")
cache_app = typer.Typer(no_args_is_help=True, help="The shared teacher-output cache.")
app.add_typer(cache_app, name="cache")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")
app.add_typer(grid_app, name="grid")
app.add_typer(wandb_app, name="wandb")
app.add_typer(hpo_app, name="hpo")
app.add_typer(analyze_app, name="analyze")
app.add_typer(cost_app, name="cost")

console = Console()
err_console = Console(stderr=True)
_MMF_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=_MMF_ARGS)
def run(
    ctx: typer.Context,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    wait: bool = typer.Option(True, "--wait/--no-wait",
                              help="When another process trains the same run: wait for it (default) or refuse."),
    debug: bool = typer.Option(False, "--debug", help="Print full tracebacks (also: MSD_DEBUG=1)."),
) -> None:
    """Train one run: msd run dataset=hateful_memes model=late_fusion method=teacher [key=value ...]"""
    from benchmark.config.loader import build_config
    from benchmark.config.validate import validate_config
    from benchmark.grid.locks import run_lock
    from benchmark.tracking.failure import Terminated, run_failure_of, sigterm_interrupts
    from benchmark.tracking.run_id import compute_run_id
    from benchmark.tracking.wandb_logger import wandb_callbacks
    from benchmark.train.distributed import launcher_world
    from benchmark.train.trainer import run_experiment

    debug = debug or _debug_requested()
    config = build_config(list(ctx.args))
    validate_config(config)  # before any run directory, lock or W&B run exists
    rank, world, _ = launcher_world()
    # The grid's per-run lock: one process trains a run. Under torchrun rank 0 holds it for the
    # group, and refuses rather than waits (its peers would time out in the process group).
    try:
        with sigterm_interrupts(), run_lock(config.env.save_dir, compute_run_id(config), wait=wait and world == 1,
                                            enabled=rank == 0, announce=lambda m: err_console.print(m, highlight=False)):
            result = run_experiment(config, progress=progress, callbacks=wandb_callbacks(config))
    except BaseException as exc:
        # A run that crashed (NaN, full disk, out of memory, SIGTERM) has recorded its status
        # and error.log: one paragraph naming them. Anything else is a bug and keeps its traceback.
        failure = run_failure_of(exc)
        if isinstance(exc, Terminated) and failure is None and not debug:
            err_console.print(f"{exc} before the run started: nothing was written.", highlight=False)
            raise typer.Exit(143) from None
        if failure is None or debug:
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(failure.paragraph())}", highlight=False)
        raise typer.Exit(failure.exit_code) from None
    if rank != 0:  # under torchrun, rank 0 reports for the whole run
        return
    verb = "already complete, skipped" if result.skipped else result.summary.get("status", "?")
    where = result.summary.get("written_to") or result.run_dir.path
    console.print(f"[bold]{result.run_id}[/bold]: {verb} -> {where}")
    headline = result.summary.get("headline") or {}
    for split, value in headline.items():
        console.print(f"  {split}/{result.summary.get('dataset')}/{result.summary.get('headline_metric')} = {value:.4f}")
    for key, value in (result.summary.get("metrics") or {}).items() if result.summary.get("status") == "scored" else ():
        console.print(f"  {key} = {value:.4f}")


@app.command("eval", context_settings=_MMF_ARGS)
def eval_run(
    ctx: typer.Context,
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique id prefix, or run directory."),
    save_dir: Path | None = typer.Option(None, help="Run store (default: env.save_dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-score a finished run without training: msd eval <run> [split=test] [data_dir=…] [views=multi,image] [key=value ...]"""
    import json

    from benchmark.config.loader import build_config
    from benchmark.train.rescore import parse_eval_args, rescore

    args = parse_eval_args(list(ctx.args))
    store = save_dir or next((a.split("=", 1)[1] for a in args.overrides if a.startswith("env.save_dir=")), None)
    perturbation = None
    if args.perturb:  # perturb=image_noise:0.5 [perturb_seed=N]: docs/robustness.md
        from benchmark.train.perturb import perturbation_from_arg

        perturbation = perturbation_from_arg(args.perturb)
    result = rescore(run_ref, save_dir=store or build_config([]).env.save_dir, splits=args.splits or None,
                     data_dir=args.data_dir, views=args.views or None, overrides=args.overrides,
                     perturbation=perturbation, perturb_seed=args.perturb_seed)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        return
    stored = (result.run.read_summary() or {}).get("metrics") or {} if result.comparison else {}
    table = Table("metric", "value", *(("summary", "|diff|") if result.comparison else ()),
                  title=f"{result.run.run_id} ({result.checkpoint.name})")
    for key, value in result.metrics.items():
        extra = () if not result.comparison else (
            ("-", "-") if key not in stored else (f"{stored[key]:.6f}", f"{abs(value - stored[key]):.2e}"))
        table.add_row(key, f"{value:.6f}", *extra)
    console.print(table)
    if result.comparison:
        c = result.comparison
        console.print(f"max |diff| against summary.json over {c.compared} metrics: {c.max_abs_diff:.2e}")
    else:
        console.print("not compared with summary.json: other data, checkpoint or model keys than the run's own")
    console.print(f"wrote {result.path}/{{metrics.json,predictions.parquet}}", soft_wrap=True, highlight=False)


@app.command("robustness", context_settings=_MMF_ARGS)
def robustness(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Grid file, e.g. experiments/table2.yaml."),
    scale: str = typer.Option("default", "--scale", "-s", help="A scale of the grid file (e.g. smoke)."),
    only: str | None = typer.Option(None, "--only", help="Glob(s) over cell names, comma-separated."),
    spec_file: Path | None = typer.Option(None, "--spec", help="Robustness spec (default: benchmark/config/robustness.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Spec override key=value (repeatable), e.g. seed=1."),
    force: bool = typer.Option(False, "--force", help="Score again runs whose curves exist."),
) -> None:
    """Robustness curves (missing/noisy modalities) of every finished run of a grid: docs/robustness.md"""
    import time

    from benchmark.grid.cells import expand
    from benchmark.grid.spec import load_grid
    from benchmark.train.perturb import load_spec
    from benchmark.train.robustness_eval import robustness_grid

    started = time.time()
    spec = load_spec(spec_file, set_)
    grid = expand(load_grid(file, scale), list(ctx.args))
    console.print(f"robustness {spec.eval_name}: {', '.join(f'{n} {spec.levels(n)}' for n in spec.perturbations)} "
                  f"on {spec.split}, seed {spec.seed}", highlight=False)
    counts = robustness_grid(grid.select(only), spec, force=force,
                             announce=lambda m: console.print(m, highlight=False, soft_wrap=True))
    console.print(f"msd robustness: {', '.join(f'{v} {k}' for k, v in counts.items())} "
                  f"in {time.time() - started:.1f} s", highlight=False)


@config_app.command("show", context_settings=_MMF_ARGS)
def config_show(ctx: typer.Context) -> None:
    """Print the resolved config for an MMF command line."""
    from benchmark.config.loader import build_config
    from benchmark.tracking.run_id import compute_run_id

    config = build_config(list(ctx.args))
    console.print(OmegaConf.to_yaml(config), markup=False, highlight=False)
    console.print(f"# run_id: {compute_run_id(config)}")


def _cache_args(args: list[str]) -> list[str]:
    """``msd cache`` arguments with ``dataset=`` taken from the teacher's summary when not given."""
    if not any(a.startswith("dataset=") for a in args):
        from benchmark.config.loader import build_config
        from benchmark.tracking.run_store import RunStore

        ref = next((a.split("=", 1)[1] for a in args if a.startswith("teacher=")), None)
        if ref:
            probe = build_config([a for a in args if a.startswith("env.")])
            summary = RunStore(probe.env.save_dir).find(ref).read_summary() or {}
            args = [*args, f"dataset={summary.get('dataset')}"]
    return args


@cache_app.command("build", context_settings=_MMF_ARGS)
def cache_build(
    ctx: typer.Context,
    rebuild: bool = typer.Option(False, help="Rebuild even when a valid cache exists."),
) -> None:
    """Cache a teacher's logits (3 views) and saliency: msd cache build teacher=<run> [dataset=…]"""
    from benchmark.config.loader import build_config
    from benchmark.config.validate import validate_config
    from benchmark.data.build import build_dataset
    from benchmark.distill.cache import full_split_config, get_teacher_cache
    from benchmark.distill.teacher import load_teacher
    from benchmark.train.batching import resolve_device

    config = build_config([*_cache_args(list(ctx.args)), "method=kd"])
    validate_config(config)  # a student named as teacher= is refused here, not by a checkpoint mismatch
    device = resolve_device(str(config.training.device))
    info = build_dataset(full_split_config(config), "val").info
    teacher = load_teacher(config, info, device)
    cache = get_teacher_cache(config, teacher, device, rebuild=rebuild,
                              spot_check_samples=int(config.distill.cache_spot_check))
    console.print(f"teacher cache: {cache.path}")
    for split, shape in cache.meta["shapes"].items():
        console.print(f"  {split}: logits {shape['logits']} saliency {shape['saliency']}")


@cache_app.command("verify", context_settings=_MMF_ARGS)
def cache_verify(
    ctx: typer.Context,
    path: Path | None = typer.Option(None, help="A cache directory (default: the cache of teacher=… on its dataset)."),
) -> None:
    """Check every chunk of a teacher cache against its checksums: msd cache verify teacher=<run> [dataset=…]"""
    import json
    import time

    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from benchmark.distill.cache import StaleCacheError, cache_key, cache_root, open_cache, rebuild_command
    from benchmark.errors import DataError

    if path is None:
        from benchmark.config.loader import build_config
        from benchmark.distill.teacher import LoadedTeacher, resolve_teacher_run

        config = build_config([*_cache_args(list(ctx.args)), "method=kd"])
        run = resolve_teacher_run(config)
        key, _ = cache_key(config, LoadedTeacher(run=run, config=run.read_config(), model=None, summary={}))
        path = cache_root(config) / key
        if not (path / "meta.json").exists():
            raise DataError(f"No teacher cache for teacher {run.run_id} on {config.dataset} (looked in {path}); "
                            f"build it with `msd cache build teacher={run.run_id} dataset={config.dataset}`.")
    elif not (path / "meta.json").exists():
        raise DataError(f"{path} is not a teacher cache (no meta.json).")
    meta = json.loads((path / "meta.json").read_text())
    try:
        cache = open_cache(path, str(meta.get("key")), verify="lazy")
        tick = time.perf_counter()
        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err_console, transient=True) as progress:
            task = progress.add_task(f"verifying {path.name}", total=cache.nbytes)
            cache.verify_all(on_bytes=lambda n: progress.advance(task, n))
        seconds = time.perf_counter() - tick
    except StaleCacheError as exc:
        if isinstance(exc, UserError):
            raise
        raise DataError(f"Teacher cache {path} cannot be used ({exc}). Rebuild it: `{rebuild_command(meta)}`.") from exc
    chunks = sum(array.n_chunks for _, array in cache.arrays())
    console.print(f"teacher cache {path}: {chunks} chunks, {cache.nbytes / 1e9:.2f} GB, every checksum matches "
                  f"({seconds:.1f} s, {cache.nbytes / 1e9 / max(seconds, 1e-9):.2f} GB/s)")


@data_app.command("make")
def data_make(
    dataset: str = typer.Option(..., "--dataset", "-d", help="hateful_memes | mmimdb | visual_entailment | vqa2 | easy_vqa"),
    size: int | None = typer.Option(
        None, help="Training samples (default: the generator's). easy_vqa: training questions, 0 = every question."
    ),
    seed: int = typer.Option(0, help="Generator seed."),
    data_dir: Path | None = typer.Option(None, help="Root data directory (default: env.data_dir)."),
    force: bool = typer.Option(False, help="Regenerate even if an identical dataset exists."),
) -> None:
    """Write a dataset in MMF's exact on-disk layout (synthetic, or easy-VQA from its package)."""
    from benchmark.config.loader import build_config
    from benchmark.data.make import make_dataset

    root = data_dir or Path(build_config([]).env.data_dir)
    summary = make_dataset(dataset, root, size=size, seed=seed, force=force)
    console.print_json(data=summary)


@data_app.command("list")
def data_list() -> None:
    """List the datasets and generators the suite knows."""
    from benchmark.registry import registry

    table = Table("dataset", "generator")
    generators = set(registry.names("generator"))
    for name in registry.names("dataset"):
        table.add_row(name, "yes" if name in generators else "-")
    console.print(table)


@runs_app.command("list")
def runs_list(
    save_dir: Path | None = typer.Option(None, help="Run store (default: env.save_dir)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Only runs of this dataset."),
    method: str | None = typer.Option(None, "--method", help="Only runs of this method (msd, or msd-instance)."),
    status: str | None = typer.Option(None, "--status", help="Only runs in this state (completed, running, "
                                      "interrupted, failed)."),
) -> None:
    """Every run with its true status (a dead 'running' run shows as interrupted), progress and headline."""
    from benchmark.config.loader import build_config
    from benchmark.tracking.run_store import RunStore
    from benchmark.tracking.runs_table import collect_rows, headline_caption, runs_table

    store = RunStore(save_dir or build_config([]).env.save_dir)
    rows = collect_rows(store, dataset=dataset, method=method, status=status)
    table = runs_table(rows, console)
    table.caption = f"{len(rows)} runs" + (f" · {headline_caption(rows)}" if headline_caption(rows) else "")
    console.print(table)


@runs_app.command("index")
def runs_index(save_dir: Path | None = typer.Option(None, help="Run store (default: env.save_dir).")) -> None:
    """Rebuild results/runs.parquet from the run directories."""
    from benchmark.config.loader import build_config
    from benchmark.tracking.run_store import RunStore

    path = RunStore(save_dir or build_config([]).env.save_dir).rebuild_index()
    console.print(f"wrote {path}")


def _debug_requested() -> bool:
    """``--debug`` (read from argv, so that an error raised before the command's own option is
    parsed also shows its traceback) or ``MSD_DEBUG=1``; never written back into the
    environment, where it would outlive the command (tests call ``main`` in one process)."""
    return bool(os.environ.get("MSD_DEBUG")) or "--debug" in sys.argv[1:]


def main() -> None:
    try:
        app()
    except UserError as exc:
        if _debug_requested():
            raise
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
