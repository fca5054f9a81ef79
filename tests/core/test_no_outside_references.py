"""Every reference in the repository points to something a user who clones it can read.

The design notes the code once cited lived in a folder of one development machine, outside
the repository, so a user could not read the protocol the code implements. The project's own
``docs/protocol.md``, ``docs/architecture.md`` and ``docs/mmf_formats.md`` replaced them. These
tests keep it that way: no tracked file may contain a relative path into a ``shared`` folder
next to the checkout, an absolute path under the ``work`` or ``home`` top-level folders, or a
citation of one of those notes by name (or of any other upper-case Markdown file name that is
not in the repository); and every numbered section cited in one of the project's design docs must
exist. This file builds its planted examples from pieces, so that a plain ``git grep`` for
such references does not find them here.

Generated outputs under ``results/`` are not scanned. They are written by ``msd analyze``
(``analysis/``) from the run store, which is not in git, so a reference fixed in their
sources (``analysis/`` and ``docs/``, which are scanned) reaches them only at the next full
rebuild (``make reproduce-table2``); until then the committed copies may still carry text
from before the fix.

The scanning functions are tested on planted strings first, so a scanner that finds nothing
cannot pass for a clean repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED_PREFIXES = ("results/",)
"""Outputs rebuilt from scanned sources and a run store that is not in git (module docstring)."""

# The notes' names, without their suffix, so that this file does not cite them itself.
MD, UP, WORK, HOME = ".md", "..", "/wo" + "rk/", "/ho" + "me/"
OUTSIDE_NOTES = ("PROTOCOL", "ARCHITECTURE", "MMF_FORMATS", "LOCAL_SERVICES", "MMF_ON_A_CURRENT_STACK")

_PATTERNS: dict[str, re.Pattern[str]] = {
    # Two dots, a slash (or backslash) and "shared": a folder next to the checkout.
    "relative path to a shared folder outside the repository": re.compile(r"\.\.[/\\]+shared\b"),
    # A path starting at the top-level "work" or "home" folder (also after "file://"), not the
    # tail of a word or variable ("$HOME" + WORK + "x" or a URL path with "home" are not such paths).
    "absolute path of a development machine": re.compile(r"(?<![\w.~$%-])/(?:work|home)/(?=[\w.~-])"),
    # A note's name with its Markdown suffix, or followed by a section sign ("NAME §4").
    "citation of a design note outside the repository": re.compile(
        r"(?<![\w-])(?:" + "|".join(OUTSIDE_NOTES) + r")(?:\.md\b|\s*§)"
    ),
}
_UPPER_DOC = re.compile(r"(?<![\w.-])([A-Z][A-Z0-9_]*\.md)\b")

DESIGN_DOCS = ("docs/protocol.md", "docs/architecture.md", "docs/mmf_formats.md")
_SECTION_CITATION = re.compile(
    r"(?P<doc>docs/(?:protocol|architecture|mmf_formats)\.md)`?\)?\s*"
    r"(?P<sections>§\s*\d+(?:\.\d+)*(?:\s*(?:,|-|–|and)\s*§?\s*\d+(?:\.\d+)*)*)"
)
_SECTION_NUMBER = re.compile(r"\d+(?:\.\d+)*")
_HEADING_NUMBER = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


# -- scanning functions ----------------------------------------------------------------------------
def outside_references(text: str, known_names: frozenset[str]) -> list[tuple[int, str, str]]:
    """``(line, what, matched text)`` for each reference in ``text`` to a file outside the repository.

    ``known_names`` are the base names of the repository's files: an upper-case Markdown file
    name among them (``README.md``) is a legitimate citation.
    """
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in _PATTERNS.items():
            found += [(number, what, match.group(0)) for match in pattern.finditer(line)]
        for match in _UPPER_DOC.finditer(line):
            if match.group(1) not in known_names and match.group(1)[: -len(".md")] not in OUTSIDE_NOTES:
                found.append((number, "citation of a document that is not in the repository", match.group(1)))
    return found


def cited_sections(text: str) -> list[tuple[int, str, str]]:
    """``(line, doc, section number)`` for each section of a design doc that ``text`` cites."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _SECTION_CITATION.finditer(line):
            found += [(number, match.group("doc"), s) for s in _SECTION_NUMBER.findall(match.group("sections"))]
    return found


def section_numbers(markdown: str) -> set[str]:
    """The numbers of a Markdown document's numbered headings (``## 4.`` -> ``4``, ``### 4.3`` -> ``4.3``)."""
    return set(_HEADING_NUMBER.findall(markdown))


def tracked_text_files(root: Path) -> dict[str, str]:
    """Path -> content of every tracked text file outside the generated outputs."""
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    files = {}
    for name in listing.decode().split("\0"):
        path = root / name
        if not name or name.startswith(GENERATED_PREFIXES) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


# -- the scanners on planted strings ---------------------------------------------------------------
NOTE = OUTSIDE_NOTES[0]
KNOWN = frozenset({"README.md", "protocol.md"})


@pytest.mark.parametrize(
    "planted",
    [
        "see " + UP + "/shared/" + NOTE + MD + " for the formats",
        "# docs: " + UP + "\\shared\\notes.txt",
        "an MMF directory; see " + WORK + "shared/notes" + MD,
        "default: " + HOME + "alice/mmf/data",
        '"path": "file://' + HOME + 'alice/runs"',
        "(" + NOTE + MD + " §5)",
        "mean over classes (" + NOTE + " §4)",
        "the contract of " + OUTSIDE_NOTES[1] + MD,
        "as in `" + OUTSIDE_NOTES[-1] + MD + "`:",
        "details in DESIGN_NOTES" + MD,
    ],
)
def test_planted_outside_references_are_found(planted):
    found = outside_references(f"first line\n{planted}\nlast line\n", KNOWN)
    assert found, f"not flagged: {planted!r}"
    assert {line for line, _, _ in found} == {2}


@pytest.mark.parametrize(
    "legitimate",
    [
        "docs/protocol.md §5.1",
        "(`docs/architecture.md` §4.6)",
        "PICKLE_PROTOCOL = 3  # the pickle protocol np.save uses",
        "journal:/shared/hpo/<study>.log on a shared file system",
        "~/.cache/msd-benchmark/data",
        "$HOME" + WORK + "mmf and %USERPROFILE%" + HOME + "x",
        "https://github.com/facebookresearch/mmf/blob/main" + HOME + "x.py",
        "the README.md of the project",
        "import benchmark.shared_helpers",
        "a homepage at /homepage",
        "results/shared/table.md",
    ],
)
def test_legitimate_text_is_not_flagged(legitimate):
    assert outside_references(legitimate, KNOWN) == []


def test_section_citations_are_read_with_lists_and_ranges():
    text = "x\n(docs/protocol.md §4.4, §6) and (`docs/architecture.md` §4.6); docs/protocol.md §9.3-9.5.\n"
    assert cited_sections(text) == [
        (2, "docs/protocol.md", "4.4"),
        (2, "docs/protocol.md", "6"),
        (2, "docs/architecture.md", "4.6"),
        (2, "docs/protocol.md", "9.3"),
        (2, "docs/protocol.md", "9.5"),
    ]


def test_section_numbers_are_the_numbered_headings():
    markdown = "# Title\n\n## 1. Scope\n\n### 1.2 Detail\n\ntext §9\n\n## Unnumbered\n## 10. Last\n"
    assert section_numbers(markdown) == {"1", "1.2", "10"}


# -- the repository -------------------------------------------------------------------------------
def test_no_tracked_file_points_outside_the_repository():
    files = tracked_text_files(ROOT)
    known = frozenset(Path(name).name for name in files)
    problems = [
        f"{name}:{line}: {what}: {text!r}"
        for name, content in sorted(files.items())
        for line, what, text in outside_references(content, known)
    ]
    assert len(files) > 100, f"only {len(files)} tracked text files found: the listing is broken"
    assert not problems, "References outside the repository (cite docs/protocol.md, docs/architecture.md " \
        "or docs/mmf_formats.md instead):\n" + "\n".join(problems)


def test_cited_design_doc_sections_exist():
    files = tracked_text_files(ROOT)
    sections = {doc: section_numbers((ROOT / doc).read_text(encoding="utf-8")) for doc in DESIGN_DOCS}
    assert all(sections.values()), f"a design doc has no numbered sections: {sections}"
    citations = [(name, *c) for name, content in sorted(files.items()) for c in cited_sections(content)]
    missing = [f"{name}:{line}: {doc} §{section}" for name, line, doc, section in citations
               if section not in sections[doc]]
    assert citations, "no section citation found: the citation pattern is broken"
    assert not missing, "Cited sections that do not exist (renumbered or removed?):\n" + "\n".join(missing)
