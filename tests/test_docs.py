"""The docs are executed: every ```python block of README.md and docs/*.md runs.

Blocks of one file run in order in one namespace (a tutorial builds up), in a temporary
working directory. Info-string words after `python` change that:
  ```python no-run       shown, not executed (say why in the text around it)
  ```python needs-mnist  executed only when $TINYGRAD_MLP_DATA holds the MNIST files
Links to other pages and repo files must resolve, and so must #anchors to headings.

docs/api.md must name every public name (tinygrad_mlp.__all__, each submodule's __all__,
every Function in ops), give a `name(parameters)` entry for every public callable, and
every such entry must match the code's signature (parameter names, kinds, defaults).
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
    if skipped:  # the other blocks ran and passed; say visibly what did not run
        pytest.skip(f"ran {ran} block(s); the blocks at lines {skipped} need MNIST: set "
                    f"TINYGRAD_MLP_DATA")
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


# ----------------------------------------------------------------------------- API reference
# Submodules whose public names are written `module.name` in docs/api.md, and those whose
# names are re-exported at the top level and written bare.
QUALIFIED = ("nn", "optim", "train", "data", "viz", "reference", "testing",
             "estimators", "export")
REEXPORTED = ("tensor", "gradcheck", "forward", "jit")
# An entry of docs/api.md: a heading, or a list item, that starts with `name(parameters)`
# (a list item may start with several, separated by commas).
SIGNATURE = r"`[A-Za-z_][\w.]*\([^`]*\)`"
ENTRY_RUN = re.compile(rf"^(?:#+\s+|\s*-\s+)({SIGNATURE}(?:,\s*{SIGNATURE})*)", re.M)
ENTRY = re.compile(r"`([A-Za-z_][\w.]*)\(([^`]*)\)`")


def _api_text():
    return FENCE.sub("", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"))


def _public_ops():
    """Every Function subclass and public function defined in tinygrad_mlp.ops."""
    import inspect

    from tinygrad_mlp import Function, ops

    return sorted(name for name, obj in vars(ops).items()
                  if not name.startswith("_") and getattr(obj, "__module__", None) == ops.__name__
                  and ((inspect.isclass(obj) and issubclass(obj, Function))
                       or inspect.isfunction(obj)))


def _public_names():
    """(how api.md must write it, the object) for every public name of every submodule."""
    import importlib

    out = []
    for mod in QUALIFIED + REEXPORTED:
        module = importlib.import_module(f"tinygrad_mlp.{mod}")
        for name in module.__all__:
            out.append((f"{mod}.{name}" if mod in QUALIFIED else name, getattr(module, name)))
    from tinygrad_mlp import ops

    out += [(f"ops.{name}", getattr(ops, name)) for name in _public_ops()]
    return out


def test_every_submodule_name_is_in_the_api_reference():
    text = _api_text()
    names = [written for written, _ in _public_names()]
    assert len(names) > 60, names  # the submodules' __all__ were found
    missing = [n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}\b", text)]
    assert not missing, f"docs/api.md does not mention: {missing}"


def _resolve(dotted):
    """The object `dotted` names, starting from tinygrad_mlp's namespace; (obj, owner)."""
    import importlib
    import types

    import tinygrad_mlp

    obj, owner = tinygrad_mlp, None
    for part in dotted.split("."):
        if not hasattr(obj, part) and isinstance(obj, types.ModuleType):
            try:  # a submodule that `import tinygrad_mlp` does not load (estimators)
                importlib.import_module(f"{obj.__name__}.{part}")
            except ImportError:
                pass
        if not hasattr(obj, part):
            return None, None
        owner, obj = obj, getattr(obj, part)
    return obj, owner


def _real_parameters(obj, owner, attr):
    """inspect.Parameters of what a user calls: a class's constructor, a function, or a
    method without its `self`."""
    import inspect

    params = list(inspect.signature(obj).parameters.values())
    if inspect.isclass(owner) and not inspect.isclass(obj):
        raw = inspect.getattr_static(owner, attr)
        if inspect.isfunction(raw):  # a plain method: the docs leave out self
            params = params[1:]
    return params


def _documented_parameters(text):
    """Parse `a, b=1, *, c=None` as a def's parameter list: [(name, kind, default source)]."""
    import ast

    tree = ast.parse(f"def _({text}): pass")
    args = tree.body[0].args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for a, d in zip(positional, defaults):
        out.append((a.arg, "POSITIONAL_OR_KEYWORD", d))
    if args.vararg:
        out.append((args.vararg.arg, "VAR_POSITIONAL", None))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, "KEYWORD_ONLY", d))
    if args.kwarg:
        out.append((args.kwarg.arg, "VAR_KEYWORD", None))
    return out


def _api_entries():
    return [(e.group(1), e.group(2)) for run in ENTRY_RUN.finditer(_api_text())
            for e in ENTRY.finditer(run.group(1))]


def test_api_reference_signatures_match_the_code():
    import ast
    import inspect

    entries = _api_entries()
    assert len(entries) > 80, f"only {len(entries)} signature entries found in docs/api.md"
    bad = []
    for dotted, params_text in entries:
        obj, owner = _resolve(dotted)
        if obj is None:
            bad.append(f"{dotted}: no such name in tinygrad_mlp")
            continue
        try:
            documented = _documented_parameters(params_text)
        except SyntaxError:
            bad.append(f"{dotted}: cannot parse the parameters ({params_text})")
            continue
        real = _real_parameters(obj, owner, dotted.rsplit(".", 1)[-1])
        doc_sig = [(n, k) for n, k, _ in documented]
        real_sig = [(p.name, p.kind.name if p.kind.name != "POSITIONAL_ONLY"
                     else "POSITIONAL_OR_KEYWORD") for p in real]
        if doc_sig != real_sig:
            bad.append(f"{dotted}: documented ({params_text}), the code has "
                       f"{inspect.signature(obj)}")
            continue
        for (name, _, doc_default), p in zip(documented, real):
            has_default = p.default is not inspect.Parameter.empty
            if (doc_default is not None) != has_default:
                bad.append(f"{dotted}: parameter {name} default documented "
                           f"{'present' if doc_default is not None else 'absent'}, the "
                           f"code has {'one' if has_default else 'none'}")
                continue
            if doc_default is None:
                continue
            if isinstance(p.default, (bool, int, float, str, tuple, type(None))):
                try:
                    value = ast.literal_eval(doc_default)
                except ValueError:
                    bad.append(f"{dotted}: default of {name} is documented as "
                               f"{ast.unparse(doc_default)}, the code has {p.default!r}")
                    continue
                numbers = (int, float)
                same_kind = type(value) is type(p.default) or (
                    isinstance(value, numbers) and isinstance(p.default, numbers)
                    and not isinstance(value, bool) and not isinstance(p.default, bool))
                if value != p.default or not same_kind:
                    bad.append(f"{dotted}: default of {name} is documented as {value!r}, "
                               f"the code has {p.default!r}")
    assert not bad, "docs/api.md signatures disagree with the code:\n  " + "\n  ".join(bad)


def test_every_public_callable_has_a_signature_entry():
    import inspect

    documented = {dotted for dotted, _ in _api_entries()}
    missing = []
    for written, obj in _public_names():
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue  # exceptions: mentioned, no constructor to document
        if written.startswith("ops.") and inspect.isclass(obj):
            continue  # ops are called as ops.Name.apply(...); the table documents them
        if callable(obj) and written not in documented:
            missing.append(written)
    assert not missing, f"docs/api.md has no `name(...)` entry for: {missing}"


# Pages whose ```text blocks are output: each ```text block right after a ```python block
# must be exactly what that block prints (the reports and step lists on them are real).
PAGES_WITH_OUTPUT = ["docs/checking_backprop.md", "docs/visualization.md"]


@pytest.mark.parametrize("name", PAGES_WITH_OUTPUT)
def test_text_blocks_are_what_the_python_blocks_print(name, tmp_path, monkeypatch):
    import contextlib
    import io

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    page = ROOT / name
    namespace = {"__name__": f"doc:{page.name}"}
    printed, compared = None, 0
    for m in FENCE.finditer(page.read_text(encoding="utf-8")):
        words = m.group(1).split()
        if words[:1] == ["python"] and "no-run" not in words:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(m.group(2), str(page), "exec"), namespace)
            printed = buf.getvalue()
        elif words == ["text"] and printed is not None:
            assert m.group(2) == printed, (f"{name}: the page shows\n{m.group(2)}\nthe block "
                                           f"before it prints\n{printed}")
            compared += 1
            printed = None
    assert compared >= 2, f"{name}: no ```text block after a ```python block"


def test_backprop_page_shows_the_real_compare_gradients_output(tmp_path):
    """docs/backprop.md pastes the output of examples/compare_gradients.py: it must be current."""
    import subprocess
    import sys

    if not _mnist_available():
        pytest.skip("examples/compare_gradients.py reads MNIST: set TINYGRAD_MLP_DATA")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "compare_gradients.py"),
                           "--no-graph", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (ROOT / "docs" / "backprop.md").read_text(encoding="utf-8")
    lines = [line for line in proc.stdout.splitlines()
             if line.strip() and not line.startswith("wrote ")]
    assert len(lines) > 10, proc.stdout
    stale = [line for line in lines if line not in page]
    assert not stale, "docs/backprop.md does not show these lines of the script's output:\n" \
        + "\n".join(stale)
