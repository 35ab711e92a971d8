"""Every example the README and docs/ show with its output is run, and must print what the page shows.

- ```python / ```pycon blocks with `>>> ` lines are doctests (ELLIPSIS, NORMALIZE_WHITESPACE), run in a
  temporary folder holding a copy of layers.yaml; a block sees the names the page's earlier blocks made.
- ```console blocks: each `$ command` runs in bash from the repository's root, `python3` being the
  project's .venv (its bin first on PATH), $TMPDIR a temporary folder; stdout and stderr together must
  match the lines below it (doctest's OutputChecker, same flags), and it must exit 0 (show a failing
  command's code with `|| echo "exit $?"`).
- Both run with the cost model's reference rates (NOTATION_RATES=reference), so the roads a page shows
  do not depend on the machine, and with the user's cache folder in the temporary folder.
- Other fences (bash, text, yaml, ...) are not run.  `...` is the stated tolerance for timings and
  figures that depend on the machine.
- A link to another page (`[plans](plans.md#the-time-line)`) must lead to that page and heading.
"""
import doctest
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
FENCE = re.compile(r"^(`{3,})\s*([\w-]*)")
TIMEOUT = 120


def fenced_blocks(text: str):
    """[(language, first line number of the block's body, body)] of every fenced block of a page."""
    blocks, lines, n = [], text.splitlines(), 0
    while n < len(lines):
        m = FENCE.match(lines[n])
        if not m:
            n += 1
            continue
        end = n + 1
        while end < len(lines) and not lines[end].startswith(m[1]):
            end += 1
        blocks.append((m[2].lower(), n + 2, "\n".join(lines[n + 1:end]) + "\n"))
        n = end + 1
    return blocks


def console_commands(body: str, first: int):
    """[(line, command, expected output)] of a console block: `$ ` lines (a trailing backslash
    continues one on a `> ` line), each followed by the lines it prints."""
    out, lines, n = [], body.splitlines(), 0
    while n < len(lines):
        if not lines[n].startswith("$ "):
            n += 1
            continue
        line, command = first + n, lines[n][2:]
        while command.endswith("\\") and n + 1 < len(lines):
            n += 1
            command += "\n" + lines[n].removeprefix("> ")  # bash joins the lines at the backslash
        n += 1
        want = []
        while n < len(lines) and not lines[n].startswith("$ "):
            want.append(lines[n])
            n += 1
        out.append((line, command, "\n".join(want).rstrip() + "\n" if any(w.strip() for w in want) else ""))
    return out


def examples():
    """One case per doctest block and per console command of every page."""
    cases = []
    for page in PAGES:
        if not page.is_file():
            continue
        name = page.relative_to(ROOT).as_posix()
        for language, line, body in fenced_blocks(page.read_text(encoding="utf-8")):
            if language in ("python", "pycon", "py") and ">>> " in body:
                cases.append(pytest.param(page, line, None, body, id=f"{name}:{line}"))
            elif language == "console":
                for at, command, want in console_commands(body, line):
                    cases.append(pytest.param(page, at, command, want, id=f"{name}:{at}"))
    return cases


class _Quiet(doctest.OutputChecker):
    """Runs a page's earlier blocks for their names alone: their outputs are checked by their own cases."""

    def check_output(self, want, got, optionflags):
        return True


def _doctest(page: Path, line: int, body: str, globs: dict) -> doctest.DocTest:
    return doctest.DocTestParser().get_doctest(body, globs, f"{page.name}:{line}", str(page), line - 1)


@pytest.mark.parametrize(("page", "line", "command", "want"), examples())
def test_documented_example_prints_what_the_page_shows(page, line, command, want, tmp_path, monkeypatch):
    shutil.copy(ROOT / "layers.yaml", tmp_path / "layers.yaml")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("NOTATION_RATES", "reference")  # the roads the pages show, on any machine
    if command is None:  # a doctest block: `want` is its body
        _run_doctest(page, line, want, tmp_path, monkeypatch)
    else:
        _run_console(page, line, command, want, tmp_path)


def _run_doctest(page, line, body, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    globs = {"__name__": "__docs__"}
    for language, at, earlier in fenced_blocks(page.read_text(encoding="utf-8")):
        if at >= line:
            break
        if language in ("python", "pycon", "py") and ">>> " in earlier:
            test = _doctest(page, at, earlier, globs)  # a DocTest works on a copy of the names it is given
            doctest.DocTestRunner(checker=_Quiet(), optionflags=FLAGS).run(test, out=lambda s: None,
                                                                           clear_globs=False)
            globs = test.globs
    report = []
    result = doctest.DocTestRunner(optionflags=FLAGS).run(_doctest(page, line, body, globs), out=report.append)
    if result.failed:
        pytest.fail(f"{page.relative_to(ROOT)}:{line}: the example prints otherwise\n" + "".join(report),
                    pytrace=False)


def _run_console(page, line, command, want, tmp_path):
    venv = ROOT / ".venv" / "bin"
    bin_dir = venv if (venv / "python3").exists() else Path(sys.executable).parent
    env = dict(os.environ, TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"),
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    got = done.stdout
    where = f"{page.relative_to(ROOT)}:{line}: $ {command}"
    if done.returncode != 0:
        pytest.fail(f"{where}\nexited {done.returncode}:\n{got}", pytrace=False)
    checker = doctest.OutputChecker()
    if not checker.check_output(want, got, FLAGS):
        example = doctest.Example(command, want)
        pytest.fail(f"{where}\n" + checker.output_difference(example, got, FLAGS), pytrace=False)


LINK = re.compile(r"\]\(([\w./-]+\.md)?(#[\w-]+)?\)")


def anchors(text: str) -> set:
    """The anchors a page's headings get on GitHub: lower case, punctuation dropped, spaces as hyphens."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # a `# comment` in a block is no heading
    return {"#" + re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+ (.*)$", prose, flags=re.M)}


@pytest.mark.parametrize("page", [p for p in PAGES if p.is_file()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_pages_lead_somewhere(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for m in LINK.finditer(text):
        target = (page.parent / m[1]).resolve() if m[1] else page
        if not target.is_file():
            broken.append(m[0])
        elif m[2] and m[2] not in anchors(target.read_text(encoding="utf-8")):
            broken.append(m[0])
    assert not broken, f"{page.relative_to(ROOT)}: links to no page or heading: {broken}"


def test_console_blocks_are_read_command_by_command():
    body = "$ echo a \\\n>   b\na b\n$ true\n"
    assert console_commands(body, 10) == [(10, "echo a \\\n  b", "a b\n"), (13, "true", "")]


def test_a_changed_output_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\n>>> 1 + 1\n3\n```\n")
    (_, line, body), = fenced_blocks(page.read_text())
    result = doctest.DocTestRunner(optionflags=FLAGS).run(_doctest(page, line, body, {}), out=lambda s: None)
    assert result.failed == 1
