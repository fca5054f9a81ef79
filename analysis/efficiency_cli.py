"""``msd analyze efficiency``: the efficiency and distillation-cost tables and the Pareto figure.

Separate from ``msd analyze all`` on purpose: it reads the cells of the efficiency grid, not
the Table 2 runs, and a store without them would overwrite committed tables with missing
cells. Registered on :data:`analysis.cli.analyze_app` by importing this module there.
"""

from __future__ import annotations

from pathlib import Path

import typer

from analysis.cli import OUT, SAVE_DIR, _env_default, analyze_app, console, err_console


@analyze_app.command("efficiency")
def efficiency_cmd(
    save_dir: Path | None = SAVE_DIR,
    out: Path = OUT,
    grid: Path = typer.Option(Path("experiments/efficiency.yaml"), "--grid", help="The grid whose cells make the points."),
    scale: str = typer.Option("default", "--scale", "-s", help="Scale of --grid (default | smoke)."),
) -> None:
    """Efficiency table, distillation-cost table and Pareto figure from the efficiency grid's runs
    (results/tables/{efficiency,distillation_cost}.*, results/figures/efficiency_pareto.*)."""
    from analysis.efficiency import FIGURE, build_efficiency_outputs, grid_runs
    from benchmark.errors import UserError

    store = Path(save_dir or _env_default("save_dir"))
    try:
        runs = grid_runs(grid, scale, store)
    except UserError as exc:
        raise typer.BadParameter(f"cannot expand {grid} at scale {scale}: {exc}") from exc
    done = int(runs["completed"].sum())
    err_console.print(f"{grid} ({scale}): {len(runs)} cells, {done} completed in {store}")
    result = build_efficiency_outputs(runs, out)
    for name in result["tables"]:
        console.print(f"wrote {out / 'tables' / name}.{{csv,md,tex}}", highlight=False)
    if result["figure"]["reason"]:
        console.print(f"[yellow]not drawn[/yellow] {FIGURE}: {result['figure']['reason']}", highlight=False)
    else:
        console.print(f"wrote {out / 'figures' / FIGURE}.{{png,pdf}}", highlight=False)
