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
DEFAULT_GRIDS = [Path("experiments/table2.yaml"), Path("experiments/easy_vqa.yaml")]
GRID = typer.Option(DEFAULT_GRIDS, "--grid",
                    help="Grid file(s) that make the tables' runs (repeat for several): only runs of the settings they "
                         "make at --scale enter the tables (see --scope); the first one's seed axis says how many "
                         "seeds a cell should have.")
SCOPE = typer.Option("grid", "--scope", help="Which runs of the store the tables use: grid = only those of the "
                     "settings --grid makes at --scale (a smoke run, an HPO trial or a sweep never mixes in); "
                     "largest = per dataset, the setting with the most completed runs (for runs made by hand).")
SCALE = typer.Option("default", "--scale", "-s", help="Scale of --grid (default | smoke).")
SEEDS = typer.Option(None, "--expected-seeds", min=1, help="Seeds a cell should have (overrides --grid).")
RESAMPLES = typer.Option(1000, "--bootstrap", min=10, help="Paired-bootstrap resamples.")
BOOT_SEED = typer.Option(0, "--bootstrap-seed", help="Seed of the bootstrap's random draws.")
CLAIMS = typer.Option(None, "--claims", help="Claims file (default: analysis/claims.yaml).")
WANDB_DIR = typer.Option(None, "--wandb-dir", help="Where W&B runs are (default: $WANDB_DIR, then tracking.wandb.dir).")


def _env_default(key: str) -> str:
    from benchmark.config.loader import build_config

    return str(build_config([]).env[key])


def expected_seeds(grid: Path | list[Path] | None, scale: str, override: int | None) -> int:
    """Seeds per cell: ``--expected-seeds``, else the grid's seed axis, else 3 (docs/protocol.md §8.1)."""
    if override:
        return override
    if isinstance(grid, list):
        grid = grid[0] if grid else None
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


def _scope(grids: list[Path], scale: str, scope: str):
    """The settings the grids make at ``scale`` (``--scope grid``), or None (``--scope largest``)."""
    if scope == "largest":
        return None
    if scope != "grid":
        raise typer.BadParameter(f"--scope must be grid or largest, not {scope!r}")
    from analysis.scope import grid_scope
    from benchmark.errors import UserError

    repo = Path(__file__).resolve().parents[1]  # the default grids, from any working directory
    grids = [g if Path(g).is_file() or not (repo / g).is_file() else repo / g for g in grids]
    missing = [str(g) for g in grids if not Path(g).is_file()]
    if missing:
        raise typer.BadParameter(f"grid file(s) not found: {', '.join(missing)} (or pass --scope largest)")
    try:
        return grid_scope(list(grids), scale)
    except UserError as exc:
        raise typer.BadParameter(f"cannot read the grids' settings: {exc}") from exc


def _context(save_dir: Path | None, cache_dir: Path | None, grid: list[Path] | None, scale: str, seeds: int | None,
             resamples: int, boot_seed: int, scope: str = "grid"):
    from analysis.load import load_runs, select_setting
    from analysis.tables import Context

    store = Path(save_dir or _env_default("save_dir"))
    all_runs = load_runs(store)
    grids = list(grid or [])
    chosen = _scope(grids, scale, scope)
    used, notes = select_setting(all_runs, chosen)
    origin = f"grid {chosen.label()}" if chosen is not None else "runs of the store's largest setting"
    ctx = Context(used, all_runs, expected_seeds=expected_seeds(grids, scale, seeds), n_resamples=resamples,
                  seed=boot_seed, cache_dir=str(cache_dir or _env_default("cache_dir")), notes=notes, origin=origin)
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


def _robustness(ctx, out: Path, spec_file: Path | None = None, overrides: list[str] | None = None) -> None:
    """Robustness table and figure from the curves `msd robustness` stored (docs/robustness.md)."""
    from analysis.robustness import build_outputs
    from benchmark.train.perturb import load_spec

    _, figure = build_outputs(ctx, out, load_spec(spec_file, overrides or []))
    console.print(f"wrote {out / 'tables' / 'robustness'}.{{csv,md,tex}}", highlight=False)
    if isinstance(figure, str):
        console.print(f"[yellow]not drawn[/yellow] robustness: {figure}", highlight=False)
    else:
        console.print(f"wrote {out / 'figures' / 'robustness'}.{{png,pdf}}", highlight=False)


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
               grid: list[Path] = GRID, scale: str = SCALE, scope: str = SCOPE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
               boot_seed: int = BOOT_SEED,
               only: str | None = typer.Option(None, "--only", help="Comma-separated: table2,saliency,ablations.")) -> None:
    """Build Table 2, the saliency and the ablation tables: results/tables/NAME.{csv,md,tex}."""
    _, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed, scope)
    _tables(ctx, out, only)


@analyze_app.command("figures")
def figures_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
                grid: list[Path] = GRID, scale: str = SCALE, scope: str = SCOPE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
                boot_seed: int = BOOT_SEED) -> None:
    """Draw Figure 1 and the saliency figures: results/figures/NAME.{png,pdf}."""
    _, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed, scope)
    _figures(ctx, out)


@analyze_app.command("report")
def report_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
               grid: list[Path] = GRID, scale: str = SCALE, scope: str = SCOPE, seeds: int | None = SEEDS, claims: Path | None = CLAIMS,
               wandb_dir: Path | None = WANDB_DIR) -> None:
    """Write results/report/index.html from the tables and figures already built."""
    store, ctx = _context(save_dir, cache_dir, grid, scale, seeds, 10, 0, scope)
    _report(ctx, store, out, claims, wandb_dir)


@analyze_app.command("robustness")
def robustness_cmd(save_dir: Path | None = SAVE_DIR, out: Path = OUT, cache_dir: Path | None = CACHE_DIR,
                   grid: list[Path] = GRID, scale: str = SCALE, scope: str = SCOPE, seeds: int | None = SEEDS,
                   spec_file: Path | None = typer.Option(None, "--spec", help="Robustness spec (default: benchmark/config/robustness.yaml)."),
                   set_: list[str] = typer.Option([], "--set", help="Spec override key=value, e.g. audc.normalisation=relative.")) -> None:
    """Robustness table and figure from the curves of `msd robustness`: results/{tables,figures}/robustness.*"""
    _, ctx = _context(save_dir, cache_dir, grid, scale, seeds, 10, 0, scope)
    _robustness(ctx, out, spec_file, set_)


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
            grid: list[Path] = GRID, scale: str = SCALE, scope: str = SCOPE, seeds: int | None = SEEDS, resamples: int = RESAMPLES,
            boot_seed: int = BOOT_SEED, claims: Path | None = CLAIMS, wandb_dir: Path | None = WANDB_DIR,
            force: bool = typer.Option(False, "--force", help="Rebuild even when no input changed since the last build.")) -> None:
    """Tables, figures and the report in one go (the claims are shown in the report, not enforced).

    Skipped when nothing it reads or wrote changed since its last build (:func:`_all_stamp`):
    a second ``make reproduce-table2`` with nothing new to analyse takes a second."""
    started = time.time()
    options = [save_dir, out, cache_dir, grid, scale, scope, seeds, resamples, boot_seed, claims, wandb_dir]
    stamp_file = out / "grids" / ".finished" / "analyze-all.json"
    if not force and stamp_file.exists() and stamp_file.read_text() == _all_stamp(options, out, cache_dir, wandb_dir):
        console.print(f"msd analyze all: nothing changed since the last build of {out} (--force rebuilds)",
                      highlight=False)
        return
    store, ctx = _context(save_dir, cache_dir, grid, scale, seeds, resamples, boot_seed, scope)
    tables = _tables(ctx, out)
    _figures(ctx, out, tables["table2"].records)
    _robustness(ctx, out)
    _report(ctx, store, out, claims, wandb_dir)
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(_all_stamp(options, out, cache_dir, wandb_dir))
    console.print(f"msd analyze all: {time.time() - started:.1f} s")


def _all_stamp(options: list, out: Path, cache_dir: Path | None, wandb_dir: Path | None) -> str:
    """What ``analyze all`` read and wrote, as ``stat``s and source digests (no byte read).

    Inputs: the options, the ``MSD_*``/``WANDB_*`` environment, the sources of ``analysis`` and
    ``benchmark`` and the docs the report embeds, and every file under the results folder (the
    run store, its index, HPO studies), the teacher caches, the data and the W&B runs. Outputs:
    ``tables/``, ``figures/``, ``report/`` (an edited or deleted output is rebuilt)."""
    import json
    import os

    from benchmark.grid.finished import source_digest, tree_digest

    repo = Path(__file__).resolve().parents[1]
    store = Path(str(options[0] or _env_default("save_dir")))
    outputs = [out / name for name in ("tables", "figures", "report")]
    inputs = [store.parent, store, Path(str(cache_dir or _env_default("cache_dir"))),
              Path(_env_default("data_dir")).expanduser(),
              Path(str(wandb_dir or os.environ.get("WANDB_DIR") or "results")) / "wandb", repo / "docs",
              *[Path(g) for g in options[3] or ()]]
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("MSD_", "WANDB_")))
    return json.dumps({"options": [str(o) for o in options], "env": env,
                       "sources": [source_digest(repo / "analysis", (".py", ".yaml", ".html", ".css", ".js")),
                                   source_digest()],
                       "inputs": tree_digest(inputs, exclude=[*outputs, out / "grids"]),
                       "outputs": tree_digest(outputs)})


# `msd analyze efficiency` lives in its own module and registers itself on analyze_app.
import analysis.efficiency_cli  # noqa: E402,F401
