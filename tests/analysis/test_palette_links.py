"""One colour per method everywhere, and a report whose links work in a fresh clone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from matplotlib.colors import to_hex

from analysis.palette import COLORS, EXTRA, color, dashes, palette

REPO = Path(__file__).resolve().parents[2]


def test_each_method_has_its_own_fixed_colour():
    assert len(set(COLORS.values())) == len(COLORS)  # no two methods share a colour
    assert color("MSD-instance") == "#0072B2" and color("instance") == "#0072B2"  # scheme name = its row
    assert color("MSD-instance (best on val)") == "#0072B2"
    assert color("only_image") == COLORS["MSD-only-image"]
    # A colour never depends on what else is drawn.
    assert palette(["KD", "MSD-learned"]) == {"KD": COLORS["KD"], "MSD-learned": COLORS["MSD-learned"]}
    assert palette(["MSD-learned"])["MSD-learned"] == palette(list(COLORS))["MSD-learned"]
    # An unknown scheme gets the same colour at every call, from the extra set.
    assert color("my-scheme") == color("my-scheme") and color("my-scheme") in EXTRA
    assert dashes("learned") == () and dashes("MSD-uniform") != dashes("MSD-population")


def _line_colours(fig) -> set[str]:
    return {to_hex(line.get_color()).upper() for ax in fig.axes for line in ax.get_lines() if line.get_xdata().size > 1}


def test_learned_weights_colours_do_not_depend_on_the_store(tmp_path, store_tools):
    from analysis.figures import learned_weights
    from analysis.load import load_runs, select_setting
    from analysis.tables import Context

    colours = []
    for name, schemes in (("a", ("uniform", "population", "instance", "learned")), ("b", ("learned",))):
        store = store_tools.FakeStore(tmp_path / name)
        for scheme in schemes:
            for seed in (0, 1):
                store.add_run("hateful_memes", "msd", scheme, seed=seed)
        runs = load_runs(store.runs)
        used, _ = select_setting(runs)
        fig = learned_weights(Context(used, runs))
        colours.append(_line_colours(fig))
    assert colours[1] == {COLORS["MSD-learned"].upper()}
    assert colours[0] == {COLORS[f"MSD-{s}"].upper() for s in ("uniform", "population", "instance", "learned")}


def dead_links(page: Path, exists) -> list[str]:
    """Relative ``href``/``src`` targets of ``page`` that ``exists`` rejects (http(s), mailto,
    data: and in-page anchors are not checked)."""
    text = page.read_text()
    dead = []
    for target in re.findall(r"""(?:href|src)=['"]([^'"]+)['"]""", text):
        if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#)", target):
            continue
        path = (page.parent / unquote(target.split("#")[0])).resolve()
        if not exists(path):
            dead.append(target)
    return dead


def test_the_report_links_nothing_that_a_fresh_clone_lacks(analyzed_store, tmp_path):
    """The run store and W&B folders are never committed: the report must not link into them."""
    import shutil

    store, out = analyzed_store
    copy = tmp_path / "clone" / "results"
    shutil.copytree(out, copy)  # the outputs only: no runs/, no wandb/ next to them
    page = copy / "report" / "index.html"
    assert "<a href" in page.read_text()
    assert dead_links(page, Path.exists) == []


def _tracked() -> set[Path] | None:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    files = {(REPO / n).resolve() for n in names.decode().split("\0") if n}
    return files | {p for f in files for p in f.parents}


def test_no_link_in_the_committed_report_is_dead():
    page = REPO / "results" / "report" / "index.html"
    tracked = _tracked()
    if tracked is None or page.resolve() not in tracked:
        pytest.skip("no committed report (or no git) here")
    if 'name="msd-report-links" content="committed-only"' not in page.read_text():
        pytest.skip("results/report/index.html predates the link rule (analysis/report.py): rebuild it with make report")
    assert dead_links(page, lambda p: p in tracked) == []
