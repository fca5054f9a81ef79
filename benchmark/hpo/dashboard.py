"""``msd hpo dashboard``: optuna-dashboard on a study's storage, on this machine's loopback.

Why serve it from here rather than tell users to type ``optuna-dashboard sqlite:///…``: the
suite already knows where a study lives (``results/hpo/<study>.db``, a search file's
``storage:``, ``journal:`` files, which optuna-dashboard's command line cannot open), and a
port of 0 picks a free one, so two dashboards (or a test) never collide. The server is
optuna-dashboard's own WSGI application under the standard library's ``wsgiref``: enough
for one user looking at a study, as optuna-dashboard's own ``run_server`` does.
"""

from __future__ import annotations

import importlib.util
import signal
import threading
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from benchmark.errors import UserError
from benchmark.hpo import storage as st

_STORAGE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".log", ".jsonl", ".journal")


@dataclass(frozen=True)
class DashboardTarget:
    url: str
    study: str | None  # a study name given: its page is printed too


def resolve_target(target: str, storage: str | None = None) -> DashboardTarget:
    """A study name (its default storage or ``--storage``), or a storage URL or file."""
    looks_like_storage = "://" in target or target.startswith(st.JOURNAL_PREFIX) or target.endswith(_STORAGE_SUFFIXES)
    if looks_like_storage and storage is None:
        url = st.resolve_url("study", target)
        local = st.sqlite_path(url) or (st.journal_path(url) if st.kind(url) == "journal" else None)
        if local is not None and not local.exists():
            raise UserError(f"No study storage at {local}: run `msd hpo run FILE` first, or give a study name.")
        return DashboardTarget(url, None)
    from benchmark.hpo.study import load_existing

    _, url = load_existing(target, storage)  # a clear error when the study is not there
    return DashboardTarget(url, target)


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr: the dashboard polls its API every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def make_dashboard(target: DashboardTarget, host: str = "127.0.0.1", port: int = 0) -> tuple[WSGIServer, str]:
    """The server (not yet serving) and the URL to open; ``port=0`` takes a free port."""
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UserError("optuna-dashboard is not installed: pip install 'msd-benchmark[hpo]' (or optuna-dashboard).")
    import optuna_dashboard

    store = st.open_storage(target.url)
    try:
        server = make_server(host, port, optuna_dashboard.wsgi(store), handler_class=_QuietHandler)
    except OSError as exc:
        raise UserError(f"Cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}; "
                        "pick another --port (0: any free one).") from exc
    url = f"http://{host}:{server.server_port}/dashboard/"
    if target.study is not None:
        url += f"studies/{store.get_study_id_from_name(target.study)}"
    return server, url


def serve_until_signal(server: WSGIServer) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM, then close the socket.

    Why not a KeyboardInterrupt: ``wsgiref`` catches every exception raised while it answers
    a request (the dashboard polls its API all the time), so one arriving then is swallowed
    and the server runs on. The signal asks ``shutdown`` instead, which lets the request in
    progress finish. A SIGINT that the shell ignores (a background job) stays ignored.
    """
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, name="dashboard-stop", daemon=True).start()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
