"""Every reference to a repository file in the docs and the code's documentation resolves.

Scanned: ``README.md``, ``docs/*.md``, and the docstrings and comments of every ``*.py``
under the packages, ``benchmarks``, ``tests`` and ``examples`` (string literals in code are
data, not documentation: a test may name a missing file on purpose). A reference is

* the target of a Markdown link (text in brackets, then the target in parentheses),
  resolved against the referencing file's directory;
* any other token made only of path characters (backticked or bare) that names a document
  (ends in ``.md``), or starts with a top-level directory of the repository (``docs/``,
  ``supervisor/``, ...) or with a directory next to the referencing file (``tasks/`` in
  ``tests/security``): resolved against the repository root, else the referencing file's
  directory.

Not references (the whole list of exclusions): URLs (``https://...``, ``mailto:``) and
anchor-only link targets (``#section``); absolute paths (``/proc/...``, ``/tmp/...``);
tokens holding any other character, which is how examples and placeholders read
(``logs/dag_id=...``, ``<log_path>.state.json``, ``{dag_id}``); relative paths that start
nowhere in the repository (``etl/load.py:main`` in an example activity), or in a hidden
directory next to the file (``.venv/bin/python``). A ``:callable``, ``::test`` or ``:line``
suffix and an ``#anchor`` are dropped before the target is looked up.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Where the scanned text lives: the Markdown docs, and the Python under these directories.
MARKDOWN = ("README.md", "docs/*.md")
PYTHON_DIRS = ("comms", "sdk", "supervisor", "apiserver", "benchmarks", "tests", "examples")

#: Top-level directories of the repository: a relative path starting with one is a reference.
REPO_DIRS = frozenset({*PYTHON_DIRS, "docs", "constraints", ".ci"})

_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|mailto:)")
# Separators between tokens: whitespace, quotes, backticks, brackets, commas, pipes.
_SEPARATORS = re.compile(r"[\s`'\"()\[\],;|]+")
# A whole token of path characters: optional ./ or ../ steps, then names joined by "/".
_PATH = re.compile(r"(?:\.{1,2}/)*[\w.-]+(?:/[\w.-]+)*/?")
_SUFFIX = re.compile(r":.*$")  # after a path: ":callable", "::test_name", ":line"


def scanned_files(root: Path = ROOT) -> list[Path]:
    """The files whose references are checked."""
    files = [path for pattern in MARKDOWN for path in sorted(root.glob(pattern))]
    for name in PYTHON_DIRS:
        files += sorted(p for p in (root / name).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def documentation_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of what a reader reads: all of a Markdown file; the docstrings
    and comments of a Python file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), start=1)
        return
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                first, last = body[0].lineno, body[0].end_lineno or body[0].lineno
                for number in range(first, last + 1):
                    yield number, lines[number - 1]
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def references(line: str, here: Path = ROOT) -> Iterator[tuple[str, bool]]:
    """The file references in one line of a file in directory ``here``:
    ``(target, is_markdown_link)``."""
    for match in _LINK.finditer(line):
        yield match.group(1), True
    # Link targets are resolved above, against the file; the rest of the line as tokens.
    rest = _LINK.sub(lambda m: m.group(0)[: m.group(0).index("](") + 1], line)
    for word in _SEPARATORS.split(rest):
        if not word or _URL.match(word):
            continue
        token = _SUFFIX.sub("", word).rstrip(".!?")
        if not _PATH.fullmatch(token) or token.startswith("/"):
            continue
        first = re.sub(r"^(?:\./)+", "", token).split("/", 1)[0]
        document = token.endswith(".md") and token.rsplit("/", 1)[-1] != ".md"
        beside = not first.startswith(".") and (here / first).is_dir()  # not .venv/bin/...
        if document or ("/" in token and (first in REPO_DIRS or beside)):
            yield token, False


def target_exists(source: Path, target: str, *, link: bool, root: Path = ROOT) -> bool:
    """Whether ``target``, referenced from ``source``, is a file or directory of the repo."""
    target = target.split("#", 1)[0]
    bases = [source.parent] if link else [root, source.parent]
    for base in bases:
        resolved = (base / target).resolve()
        if resolved.is_relative_to(root) and resolved.exists():
            return True
    return False


def broken_references(root: Path = ROOT) -> list[str]:
    """``file:line -> target`` for every reference whose target is not in the repository."""
    broken = []
    for path in scanned_files(root):
        for number, line in documentation_lines(path):
            for target, link in references(line, path.parent):
                if _is_url_or_anchor(target):
                    continue
                if not target_exists(path, target, link=link, root=root):
                    broken.append(f"{path.relative_to(root)}:{number} -> {target}")
    return sorted(set(broken), key=_natural)


def _is_url_or_anchor(target: str) -> bool:
    return target.startswith("#") or bool(_URL.match(target))


def _natural(entry: str) -> tuple[str, int, str]:
    where, _, target = entry.partition(" -> ")
    name, _, number = where.rpartition(":")
    return name, int(number), target


def test_every_reference_to_a_repository_file_resolves():
    broken = broken_references()
    assert not broken, (
        f"{len(broken)} reference(s) to files that are not in the repository:\n" + "\n".join(broken)
    )


def test_the_scanner_finds_broken_references_and_accepts_good_ones(tmp_path):
    # Names are assembled so that this file's own source holds no broken reference.
    missing, design = "nowhere", "DESIGN"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# Real\n")
    (tmp_path / "supervisor").mkdir()
    (tmp_path / "supervisor" / "relay.py").write_text(
        f'"""The relay; see docs/real.md and docs/{missing}.md."""\n'
        f"# Contracts: {design}.md\n"
        f'PATH = "docs/{missing}.md"  # a string literal is data, not documentation\n'
    )
    (tmp_path / "README.md").write_text(
        "[good](docs/real.md) [anchor](#top) [web](https://example.org/x.md)\n"
        f"[broken](docs/{missing}.md) and `supervisor/{missing}.py:main`\n"
        "`supervisor/relay.py:Relay` `logs/dag_id=d/attempt=1.log` `/tmp/x.md`\n"
        f"[up](../{missing}.md) `etl/load.py:main` `<log_path>.state.json`\n"
    )
    (tmp_path / "docs" / "guide.md").write_text(
        f"[sibling](real.md) [root](../README.md) [wrong base](docs/real.md#real) {design}.md\n"
    )
    (tmp_path / "tests" / "tasks").mkdir(parents=True)
    (tmp_path / "tests" / "tasks" / "probe.py").write_text("")
    (tmp_path / "tests" / "test_probe.py").write_text(
        f'"""Runs tasks/probe.py, not tasks/{missing}.py; see .venv/bin/python."""\n'
    )
    assert broken_references(tmp_path) == [
        f"README.md:2 -> docs/{missing}.md",
        f"README.md:2 -> supervisor/{missing}.py",
        f"README.md:4 -> ../{missing}.md",
        f"docs/guide.md:1 -> {design}.md",
        "docs/guide.md:1 -> docs/real.md#real",
        f"supervisor/relay.py:1 -> docs/{missing}.md",
        f"supervisor/relay.py:2 -> {design}.md",
        f"tests/test_probe.py:1 -> tasks/{missing}.py",
    ]
