"""``msd analyze …``: tables, figures, report and the claims check, from the run store.

Mounted by :mod:`benchmark.cli` as ``msd analyze``; every command reads only the run store
(``--save-dir``, default ``env.save_dir``) and writes under ``--out`` (default ``results``):
``tables/``, ``figures/``, ``report/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from analysis import spec

analyze_app = typer.Typer(no_args_is_help=True, help="Tables, figures, claims and the HTML report from the run store.")
console = Console()
err_console = Console(stderr=True)

SAVE_DIR = typer.Option(None, "--save-dir", help="Run store (default: env.save_dir, i.e. $MSD_SAVE_DIR or results/runs).")
OUT = typer.Option(Path("results"), "--out", "-o", help="Output root: writes tables/, figures/, report/ under it.")
CACHE_DIR = typer.Option(None, "--cache-dir", help="Teacher cache root (default: env.cache_dir).")
GRID = typer.Option(Path("experiments/table2.yaml"), "--grid", help="Grid file whose seed axis says how many seeds a cell should have.")
SCALE = typer.Option("default", "--scale", "-s", help="Scale of --grid (default | smoke).")
SEEDS = typer.Option(None, "--expected-seeds", min=1, help="Seeds a cell should have (overrides --grid).")
RESAMPLES = typer.Option(1000, "--bootstrap", min=10, help="Paired-bootstrap resamples.")
BOOT_SEED = typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap's random draws.")
CLAIMS = typer.Option(None, "--claims", help="Claims file (default: analysis/claims.yaml).")
WANDB_DIR = typer.Option(None, "--wandb-dir", help="Where W&B runs are (default: $WANDB_DIR, then tracking.wandb.dir).")


def _env_default(key: str) -> str:
    from benchmark.config.loader import build_config

    return str(build_config([]).env[key])


def expected_seeds(grid: Path | None, scale: str, override: int | None) -> int:
    """Seeds per cell: ``--expected-seeds``, else the grid's seed axis, else 3 (docs/protocol.md §8.1)."""
    if override:
        return override
    if grid is not None and Path(grid).is_file():
        try:
            from benchmark.grid.spec import load_grid

            axis = load_grid(grid, scale).axis("seed")
            if axis is not None:
                return len(axis.values)
        except Exception as exc:  # noqa: BLE001 - a broken grid file must not stop the analysis
            err_console.print(f"[yellow]Could not read seeds from {grid} ({exc}); expecting "
                              f"{spec.DEFAULT_EXPECTED_SEEDS}.[/yellow]")
    return spec.DEFAULT_EXPECTED_SEEDS


def _context(save_dir: Path | None, cache_dir: Path | None, grid: Path | None, scale: str, seeds: int | None,
             resamples: int, boot_seed: int):
    from analysis.load import load_runs, select_setting
    from analysis.tables import Context

    store = Path(save_dir or _env_default("save_dir"))
    all_runs = load_runs(store)
    used, notes = select_setting(all_runs)
    ctx = Context(used, all_runs, expected_seeds=expected_seeds(grid, scale, seeds), n_resamples=resamples,
                  seed=boot_seed, cache_dir=str(cache_dir or _env_default("cache_dir")), notes=notes)
    completed = int(all_runs["completed"].sum()) if "completed" in all_runs else 0
    err_console.print(f"run store {store}: {len(all_runs)} runs, {completed} completed, {len(used)} used "
                      f"(expecting {ctx.expected_seeds} seed(s) per cell)")
    return store, ctx


def _tables(ctx, out: Path, only: str | None = None):
    from analysis.tables import BUILDERS, build_tables

    names = tuple(n.strip() for n in only.split(",")) if only else tuple(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {unknown}; choose from {', '.join(BUILDERS)}")
    tables = build_tables(ctx, names, out / "tables")
    for name in names:
        console.print(f"wrote {out / 'tables' / name}.{{csv,md,tex}}", highlight=False)
    return tables


def _figures(ctx, out: Path, table2=None) -> None:
    from analysis.figures import build_figures

    for name, result in build_figures(ctx, out / "figures", table2).items():
        if isinstance(result, str):
            console.print(f"[yellow]not drawn[/yellow] {name}: {result}", highlight=False)
        else:
            console.print(f"wrote {out / 'figures' / name}.{{png,pdf}}", highlight=False)


def _report(ctx, store: Path, out: Path, claims: Path | None, wandb_dir: Path | None) -> None:
    from analysis.report import build_report

    path = build_report(out, ctx.all_runs, ctx.runs, ctx.notes, store, claims, [wandb_dir] if wandb_dir else None)
    console.print(f"wrote {path}", highlight=False)


def _print_claims(results) -> None:
    table = RichTable("claim", "ours (×100)", "paper", "status")
    for r in results:
        ours = "—" if r.ours is None else f"{r.ours:.2f}"
        paper = "n/a" if r.paper is None else str(r.paper)
        table.add_row(r.id, ours, paper, ("[red]" if r.failed else "") + r.status)
    console.print(table)


@analyze_app.command("tables")
def tables_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
               grid: Path = GRID, scale: str = SCALE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
               boot_seed: int = BOOT_SEED,
               only: str | None = typer.Option(None, "--only", help="Comma-separated: table2,saliency,ablations.")) -> None:
    """Build Table 2, the saliency and the ablation tables: results/tables/NAME.{csv,md,tex}."""
    _, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed)
    _tables(ctx, out, only)


@analyze_app.command("figures")
def figures_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
                grid: Path = GRID, scale: str = SCALE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
                boot_seed: int = BOOT_SEED) -> None:
    """Draw Figure 1 and the saliency figures: results/figures/NAME.{png,pdf}."""
    _, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed)
    _figures(ctx, out)


@analyze_app.command("report")
def report_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
               grid: Path = GRID, scale: str = SCALE, seeds: int | None = SEEDS, claims: Path | None = CLAIMS,
               wandb_dir: Path | None = WANDB_DIR) -> None:
    """Write results/report/index.html from the tables and figures already built."""
    store, ctx = _context(save_dir, cache_dir, grid, scale, seeds, 10, 0)
    _report(ctx, store, out, claims, wandb_dir)


@analyze_app.command("check-claims")
def check_claims_cmd(out: Path = OUT, claims: Path | None = CLAIMS,
                     tables_dir: Path | None = typer.Option(None, "--tables-dir", help="Default: OUT/tables.")) -> None:
    """Compare our table values with the paper's (claims.yaml); exit 1 if any is outside tolerance."""
    from analysis.claims import ClaimsError, evaluate_claims, load_claims

    directory = tables_dir or out / "tables"
    if not (directory / "table2.csv").exists():
        err_console.print(f"[red]No tables under {directory}: run `msd analyze tables` first.[/red]")
        raise typer.Exit(2)
    try:
        results = evaluate_claims(load_claims(claims) if claims else load_claims(), directory)
    except ClaimsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _print_claims(results)
    failed = [r for r in results if r.failed]
    compared = sum(1 for r in results if r.kind == "value" and r.paper is not None)
    console.print(f"{compared} claim(s) with a paper value compared, {len(failed)} failed; "
                  f"{sum(1 for r in results if r.kind == 'value' and r.paper is None)} without a paper value.")
    if failed:
        raise typer.Exit(1)


@analyze_app.command("all")
def all_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
            grid: Path = GRID, scale: str = SCALE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
            boot_seed: int = BOOT_SEED, claims: Path | None = CLAIMS, wandb_dir: Path | None = WANDB_DIR) -> None:
    """Tables, figures and the report in one go (the claims are shown in the report, not enforced)."""
    started = time.time()
    store, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed)
    tables = _tables(ctx, out)
    _figures(ctx, out, tables["table2"].records)
    _report(ctx, store, out, claims, wandb_dir)
    console.print(f"msd analyze all: {time.time() - started:.1f} s")
