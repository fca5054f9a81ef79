"""The grid runner: walks the DAG, hands ready tasks to a launcher, survives failures.

Guarantees, and how:

* **Idempotent** — a cell whose run directory is complete is ``done`` before anything
  starts; caches and data needed only by done cells are not even checked.
* **Resumable** — nothing is remembered outside the run store: a killed runner (or worker)
  leaves runs whose lock is free; the next invocation starts them again and the trainer
  resumes each from its ``last.pt``.
* **Isolated failures** — a failed task marks only what depends on it ``blocked``; the rest
  goes on; the exit code is non-zero and the report lists every failure with its log.
* **One runner per grid** — a lock in the grid's state directory (released by the kernel
  if the runner dies, so a stale one never blocks a rerun).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmark.grid.backend import Launcher, Outcome
from benchmark.grid.dag import CACHE, DATA, TRAIN, Plan, Task
from benchmark.grid.locks import FileLock
from benchmark.grid.spec import GridError
from benchmark.grid.status import STYLES
from benchmark.grid.view import GridView, fmt_seconds
from benchmark.tracking.run_store import RunDir, RunStore

TODO, RUNNING, DONE, SKIPPED, FAILED, BLOCKED = "todo", "running", "done", "skipped", "failed", "blocked"
INTERRUPTED = "interrupted"
SATISFIED = (DONE, SKIPPED)


@dataclass
class TaskState:
    status: str = TODO
    error: str | None = None
    log: Path | None = None
    seconds: float = 0.0
    attempts: int = 0
    resumed: bool = False


@dataclass
class GridReport:
    plan: Plan
    states: dict[str, TaskState]
    wall_time_s: float
    interrupted: bool = False
    cell_seconds: dict[str, float] = field(default_factory=dict)  # trainer wall time per trained cell

    def cells_with(self, *statuses: str) -> list[Task]:
        return [t for t in self.plan.train_tasks() if self.states[t.id].status in statuses]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(s.status not in (DONE, SKIPPED) for s in self.states.values()) else 0

    def counts(self) -> dict[str, int]:
        out = {"trained": 0, "skipped": 0, "failed": 0, "blocked": 0, "todo": 0, INTERRUPTED: 0}
        for task in self.plan.train_tasks():
            status = self.states[task.id].status
            key = {DONE: "trained", SKIPPED: "skipped", RUNNING: INTERRUPTED}.get(status, status)
            out[key] = out.get(key, 0) + 1
        return out


class GridRunner:
    def __init__(self, plan: Plan, launcher: Launcher, *, console: Console | None = None, live: bool = True,
                 retries: int = 0, poll_s: float = 0.2) -> None:
        self.plan = plan
        self.launcher = launcher
        self.console = console or Console(stderr=True)
        self.live = live and self.console.is_terminal
        self.retries = retries
        self.poll_s = poll_s
        self.states = {tid: TaskState() for tid in plan.tasks}
        self.stopping = False

    # -- public ------------------------------------------------------------------------------
    def run(self) -> GridReport:
        lock = FileLock(self.plan.state_dir / "runner.lock")
        if not lock.acquire(blocking=False):
            raise GridError(
                f"Grid {self.plan.grid.spec.group} is already being run by process {lock.owner()} "
                f"(lock {lock.path}); wait for it to finish or stop it first."
            )
        started = time.time()
        interrupted = False
        try:
            self._initial_states()
            total = len(self.plan.train_tasks())
            parallel = getattr(self.launcher, "workers", None) or 1
            title = f"grid {self.plan.grid.spec.group} · {total} cells · {self.launcher.describe()}"
            with GridView(title, total, int(parallel), live=self.live, console=self.console) as view:
                self.view = view
                try:
                    self._loop()
                except KeyboardInterrupt:
                    interrupted = self.stopping = True
                    self.console.print("[yellow]interrupted: stopping workers (runs resume on the next "
                                       "`msd grid run`)[/yellow]")
                    self.launcher.stop()
                    for outcome in self.launcher.poll():
                        self._finish(outcome)
        finally:
            lock.release()
        report = GridReport(self.plan, self.states, time.time() - started, interrupted,
                            cell_seconds=self._cell_seconds())
        if any(self.states[t.id].status == DONE for t in self.plan.train_tasks()):
            RunStore(self.plan.save_dir).rebuild_index()
        return report

    # -- scheduling ---------------------------------------------------------------------------
    def _initial_states(self) -> None:
        """Done cells are skipped; data/cache work needed only by done cells is skipped too."""
        for task in self.plan.train_tasks():
            run = self._run_dir(task)
            if run.is_complete():
                self.states[task.id].status = SKIPPED
            elif run.read_summary() is not None:
                self.states[task.id].resumed = True
        for task in self.plan.tasks.values():
            if task.kind in (DATA, CACHE):
                needed_by = [d for d in self.plan.dependents(task.id) if self.plan.tasks[d].kind == TRAIN]
                if all(self.states[d].status == SKIPPED for d in needed_by):
                    self.states[task.id].status = SKIPPED

    def _loop(self) -> None:
        while True:
            for outcome in self.launcher.poll():
                self._finish(outcome)
            ready = [t for tid, t in self.plan.tasks.items()
                     if self.states[tid].status == TODO and all(self.states[d].status in SATISFIED for d in t.deps)]
            free = self.launcher.slots()
            if ready and free > 0:
                batch = ready[:free]
                for task in batch:
                    self.states[task.id].status = RUNNING
                    self.states[task.id].attempts += 1
                    if task.cell is not None:
                        self._run_dir(task).path.mkdir(parents=True, exist_ok=True)
                self.launcher.launch(batch)
            running = {self.plan.tasks[t].label: since for t, since in self.launcher.started.items()}
            self.view.update(self._cell_counts(), running)
            if not running and not ready:
                break
            time.sleep(self.poll_s)

    def _finish(self, outcome: Outcome) -> None:
        task = self.plan.tasks[outcome.task_id]
        state = self.states[task.id]
        state.log, state.seconds = outcome.log, outcome.seconds
        ok, error = outcome.ok, outcome.error
        if task.kind == TRAIN:
            ok, error = self._check_run(task, outcome)
        if ok:
            state.status, state.error = DONE, None
        elif self.stopping:
            state.status, state.error = INTERRUPTED, "interrupted (resumes on the next run)"
        elif outcome.killed and state.attempts <= self.retries:
            state.status, state.error = TODO, error  # killed (preempted, OOM): try again now
        else:
            state.status, state.error = FAILED, error
            for dep in self.plan.dependents(task.id):
                if self.states[dep].status == TODO:
                    self.states[dep].status = BLOCKED
                    self.states[dep].error = f"{task.label} failed"
        detail = ("resumed" if state.resumed and ok else "") if ok else f"{error}  (log: {outcome.log})"
        self.view.finished(task.label, state.status, outcome.seconds, detail, is_cell=task.kind == TRAIN)

    def _check_run(self, task: Task, outcome: Outcome) -> tuple[bool, str | None]:
        """Trust the run store, not the exit code: complete means every file is there."""
        run = self._run_dir(task)
        if run.is_complete():
            return True, None
        summary = run.read_summary() or {}
        error = summary.get("error") if summary.get("status") == "failed" else None
        error = error or outcome.error or "the run ended without completing its run directory"
        if summary.get("status") in (None, "running"):
            # Killed from outside (signal, OOM, scheduler): the trainer could not record it.
            run.update_summary(status="failed", error=error)
        if not run.file("error.log").exists():
            tail = _tail(outcome.log)
            run.file("error.log").write_text(f"{error}\n\n--- last lines of {outcome.log} ---\n{tail}")
        return False, error

    # -- helpers ------------------------------------------------------------------------------
    def _run_dir(self, task: Task) -> RunDir:
        assert task.cell is not None
        return RunDir(Path(str(task.cell.config.env.save_dir)) / task.cell.run_id)

    def _cell_counts(self) -> dict[str, int]:
        out = {"done": 0, "running": 0, "failed": 0, "blocked": 0, "todo": 0}
        for task in self.plan.train_tasks():
            status = self.states[task.id].status
            key = {SKIPPED: "done", DONE: "done", INTERRUPTED: "failed"}.get(status, status)
            out[key] = out.get(key, 0) + 1
        return out

    def _cell_seconds(self) -> dict[str, float]:
        out = {}
        for task in self.plan.train_tasks():
            if self.states[task.id].status == DONE:
                summary = self._run_dir(task).read_summary() or {}
                out[task.label] = float(summary.get("wall_time_s") or 0.0)
        return out


def run_grid(
    path: str | Path,
    *,
    scale: str = "default",
    only: str | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    launcher: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 0,
    live: bool = False,
    console: Console | None = None,
    **launcher_options: Any,
) -> GridReport:
    """Expand ``path`` and run it: what ``msd grid run`` does, as a function (tests, notebooks)."""
    from benchmark.grid.cells import expand
    from benchmark.grid.dag import build_plan
    from benchmark.grid.spec import load_grid
    from benchmark.grid.worker import make_data_first
    from benchmark.registry import registry

    launcher_cls = registry.get_launcher(launcher)  # a typo fails before any expansion work
    plan = build_plan(expand(load_grid(path, scale), list(extra_args)), only)
    if not all(RunDir(Path(str(c.config.env.save_dir)) / c.run_id).is_complete() for c in plan.cells):
        launcher_cls.warm_up(workers=workers, threads=threads, **launcher_options)
    validate_cells(plan, here=launcher == "local")  # every cell, before any data is made or any cell trains
    if make_data_first(plan.tasks.values()):  # run ids hold the data's content: expand over the made data
        plan = build_plan(expand(load_grid(path, scale), list(extra_args)), only)
    backend = launcher_cls(plan.state_dir, workers=workers, threads=threads, **launcher_options)
    report = GridRunner(plan, backend, console=console, live=live, retries=retries).run()
    if report.exit_code == 0:  # the next `msd grid run` of these inputs answers from the stamp
        stamp_finished(plan, path, scale, only, extra_args)
    return report


def stamp_finished(plan: Plan, path: str | Path, scale: str, only: str | None, extra_args: Any) -> None:
    """Write the stamp of :mod:`benchmark.grid.finished` for a plan whose every cell is complete."""
    from benchmark.data.fingerprint import read_paths
    from benchmark.grid import finished
    from benchmark.tracking.run_store import REQUIRED_FILES

    runs = {str(RunDir(Path(str(c.config.env.save_dir)) / c.run_id).path.resolve()): list(REQUIRED_FILES)
            for c in plan.cells}
    data = {str(p) for c in plan.cells for p in read_paths(c.config).values()}
    args = list(extra_args)
    finished.write_stamp(finished.stamp_key(path, scale, only, args), args, group=plan.grid.spec.group,
                         runs=runs, data_paths=data)


def validate_cells(plan: Plan, *, here: bool = True) -> None:
    """Every cell of the plan through :func:`benchmark.config.validate.validate_config`.

    A student's ``teacher=`` names a teacher cell of this grid that may not have trained
    yet; it is checked against that cell's config. Problems shared by several cells (a bad
    base value) are reported once, with the cells they concern. Cells that will run on other
    machines (``here=False``: Slurm) skip the checks of this machine's hardware.
    """
    from benchmark.config import validate

    context = validate.ValidationContext(planned_teachers={c.run_id: c.config for c in plan.grid.cells if c.role == "teacher"})
    cells_by_problem: dict[str, list[str]] = {}
    for cell in plan.cells:
        try:
            validate.validate_config(cell.config, context=context, skip=() if here else validate.HOST_CHECKS)
        except validate.ConfigValidationError as exc:
            for failure in exc.failures:
                cells_by_problem.setdefault(failure, []).append(cell.name)
    if cells_by_problem:
        failures = [f"{_cells_label(names)}: {problem}" for problem, names in cells_by_problem.items()]
        raise validate.ConfigValidationError(failures, where=f"Grid file {plan.grid.spec.path}", what="its cells")


def _cells_label(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"cell{'s' if len(names) > 1 else ''} {', '.join(names[:shown])}{more}"


def print_report(console: Console, report: GridReport) -> None:
    """The final summary: one line of counts, then a row per failed, blocked or unrun task."""
    c = report.counts()
    line = (f"grid {report.plan.grid.spec.group}: {fmt_seconds(report.wall_time_s)} wall time · "
            f"{c['trained']} trained · {c['skipped']} already complete (skipped) · "
            f"[red]{c['failed']} failed[/red] · [magenta]{c['blocked']} blocked[/magenta]"
            + (f" · {c['todo']} not run" if c["todo"] else "")
            + (f" · interrupted ({c[INTERRUPTED]} cells resume on the next run)" if report.interrupted else ""))
    rows = [(task, report.states[tid]) for tid, task in report.plan.tasks.items()
            if report.states[tid].status in (FAILED, BLOCKED, TODO, RUNNING, INTERRUPTED)]
    if rows:
        table = Table(title_justify="left")
        for column in ("task", "status", "error", "log"):
            table.add_column(column, overflow="fold")
        for task, state in rows:
            style = STYLES.get(state.status, "white")
            table.add_row(task.label, f"[{style}]{state.status}[/{style}]", state.error or "", str(state.log or ""))
        console.print(table)
    console.print(line, highlight=False)


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not Path(log).exists():
        return "(no log)"
    return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
