"""The docs are executed: every ```python block of README.md and docs/*.md runs.

Blocks of one file run in order in one namespace (a tutorial builds up), in a temporary
working directory. Info-string words after `python` change that:
  ```python no-run       shown, not executed (say why in the text around it)
  ```python needs-mnist  executed only when $TINYGRAD_MLP_DATA holds the MNIST files
Links to other pages and repo files must resolve, and so must #anchors to headings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(page):
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        words = m.group(1).split()
        if words and words[0] == "python":
            line = text[:m.start()].count("\n") + 2
            out.append((set(words[1:]), m.group(2), line))
    return out


def _mnist_available():
    root = os.environ.get("TINYGRAD_MLP_DATA")
    return bool(root) and (Path(root) / "mnist").is_dir()


def _page_id(page):
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=_page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"doc:{page.name}"}
    ran = 0
    skipped = []
    for flags, code, line in _blocks(page):
        if "no-run" in flags:
            continue
        if "needs-mnist" in flags and not _mnist_available():
            skipped.append(line)
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{_page_id(page)}: the python block at line {line} "
                                 f"failed: {type(e).__name__}: {e}") from e
        ran += 1
    if skipped and not ran:
        pytest.skip(f"blocks at lines {skipped} need MNIST: set TINYGRAD_MLP_DATA")
    assert ran > 0


def _slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_resolve(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    bad = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no file {dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not bad, f"{_page_id(page)} has broken links: " + "; ".join(bad)


def test_every_public_name_is_in_the_api_reference():
    import tinygrad_mlp

    api = (ROOT / "docs" / "api.md")
    assert api.exists(), "docs/api.md is missing"
    text = api.read_text(encoding="utf-8")
    missing = [name for name in tinygrad_mlp.__all__ if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"docs/api.md does not mention: {missing}"
