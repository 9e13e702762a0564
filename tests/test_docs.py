"""The documentation site stays true: its code runs and its API reference is complete.

* Every ```python block of every page under docs/ runs, in order, the blocks of
  one page sharing a namespace (like a notebook). A block preceded by the line
  ``<!-- test: skip (reason) -->`` is not run (for code that needs GPUs, your
  own data or minutes of training); the reason is required.
* Every public name of every public module of ``hiercls`` is rendered by some
  ``::: identifier`` block of an API page, every API page's identifiers import,
  and every API page is in the nav of mkdocs.yml.
* The examples in attribute docstrings (a string after a module-level
  assignment, e.g. ``RULE_OPTIONS``) run: ``--doctest-modules`` skips them.

The strict site build itself (``mkdocs build --strict``) runs in .ci/run.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import itertools
import pkgutil
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # comes with mkdocs (the docs extra, part of dev)

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MKDOCS_YML = REPO / "mkdocs.yml"

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<attrs>[^`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*test:\s*skip\b(?P<reason>.*?)-->\s*$")
_DIRECTIVE = re.compile(r"^:::\s+(?P<ident>[\w.]+)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None
    end: int = 0  # 1-based line of the closing fence


def _blocks(page: Path) -> list[Block]:
    """Fenced code blocks of a page (also indented ones, inside admonitions or tabs)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].startswith(indent) and lines[i].strip().startswith(fence) and not lines[i].strip().strip(fence[0])
        ):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        skip = _SKIP.match(prev)
        reason = None
        if skip:
            reason = skip["reason"].strip().strip("()").strip()
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", reason if skip else None, end=i))
    return out


def _shown_outputs(page: Path) -> dict[int, Block]:
    """The ```text block right after a python block (blank lines between at most): its printed output.

    Keyed by the python block's line. The output is compared as a doctest compares it (``...`` matches
    anything, runs of whitespace are equal); a page whose output cannot be exact marks the text block
    with ``<!-- test: skip (reason) -->``, as for code.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = _blocks(page)
    shown = {}
    for code, text in itertools.pairwise(blocks):
        between = lines[code.end : text.line - 1]
        if code.lang == "python" and text.lang == "text" and not any(x.strip() for x in between):
            shown[code.line] = text
    return shown


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _runnable_pages() -> list[Path]:
    return [p for p in _pages() if any(b.lang == "python" and b.skip_reason is None for b in _blocks(p))]


def _rel(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


# --------------------------------------------------------------------------- code blocks


def test_the_block_parser_finds_the_runnable_pages() -> None:
    """Guards the tests below against silently finding nothing to run."""
    pages = {_rel(p) for p in _runnable_pages()}
    assert {"index.md", "concepts/taxonomy.md", "guides/taxonomy-sources.md"} <= pages, pages
    blocks = _blocks(DOCS / "concepts" / "taxonomy.md")
    assert sum(b.lang == "python" for b in blocks) >= 5
    assert any(b.lang == "text" for b in blocks)


def test_the_block_parser_reads_indented_fences_and_skip_marks(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "Text.\n\n```python\na = 1\n```\n\n<!-- test: skip (needs 8 GPUs) -->\n```python\nraise SystemExit\n```\n\n"
        '!!! note\n\n    ```python title="x.py"\n    b = a + 1\n    ```\n\n```bash\nls\n```\n'
    )
    blocks = _blocks(page)
    assert [(b.lang, b.skip_reason) for b in blocks] == [
        ("python", None),
        ("python", "needs 8 GPUs"),
        ("python", None),
        ("bash", None),
    ]
    assert blocks[2].code == "b = a + 1\n" and blocks[2].line == 14


def test_every_skip_mark_gives_a_reason() -> None:
    missing = [f"{_rel(b.page)}:{b.line}" for p in _pages() for b in _blocks(p) if b.skip_reason == ""]
    assert not missing, f"<!-- test: skip (reason) --> needs a reason at: {missing}"


@pytest.mark.parametrize("page", _runnable_pages(), ids=_rel)
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's python blocks run in order in one namespace, in a scratch folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(REPO))
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight the other test worker for the cores
    namespace: dict[str, object] = {"__name__": f"docs:{_rel(page)}"}
    shown = _shown_outputs(page)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    wrong = []
    try:
        for block in _blocks(page):
            if block.lang != "python" or block.skip_reason is not None:
                continue
            code = compile(block.code, f"{_rel(page)}:{block.line}", "exec")
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):
                    exec(code, namespace)
            except Exception as err:
                raise AssertionError(f"the python block at {_rel(page)}:{block.line} failed: {err!r}") from err
            text = shown.get(block.line)
            if (
                text is not None
                and text.skip_reason is None
                and not checker.check_output(text.code, printed.getvalue(), flags)
            ):
                wrong.append(
                    f"the output shown at {_rel(page)}:{text.line} is not what the block at line {block.line} prints:\n"
                    + checker.output_difference(doctest.Example("", text.code), printed.getvalue(), flags)
                )
        assert not wrong, "\n".join(wrong)
    finally:
        torch.set_num_threads(threads)
        if "matplotlib.pyplot" in sys.modules:  # figures made by a page should not pile up
            sys.modules["matplotlib.pyplot"].close("all")


def test_multi_gpu_script_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The DDP script of the multi-GPU guide trains and reports metrics (one gloo process, in this process).

    Its reduction across several processes is what the metric classes' own DDP tests check; here
    we check that the script, as printed, runs under a process group.
    """
    import socket

    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    (block,) = [b for b in _blocks(DOCS / "guides" / "multi-gpu.md") if 'title="train_ddp.py"' in _fence_line(b)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # gloo on CPU, like the guide's try-out
    namespace: dict[str, object] = {"__name__": "train_ddp"}
    exec(compile(block.code, "guides/multi-gpu.md:train_ddp.py", "exec"), namespace)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace["main"]()
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and all("world 1" in line for line in lines), lines
    assert "'accuracy'" in lines[-1] and "'hierarchical_f1'" in lines[-1]


def _fence_line(block: Block) -> str:
    return block.page.read_text(encoding="utf-8").splitlines()[block.line - 1]


# --------------------------------------------------------------------------- API reference


def _directives(page: Path) -> list[tuple[str, dict]]:
    """``::: identifier`` blocks of a page with their (YAML) options."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        opts_lines = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and not nxt.startswith("    "):
                break
            opts_lines.append(nxt)
        opts = yaml.safe_load(textwrap.dedent("\n".join(opts_lines))) or {}
        out.append((m["ident"], opts.get("options", {}) or {}))
    return out


def _resolve(ident: str) -> object:
    """The object an identifier names: the longest importable module prefix, then attributes."""
    parts = ident.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError as err:
            if err.name != ".".join(parts[:k]):
                raise  # the module exists but one of its imports is missing
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(ident)


def _public_names(module: object) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
    # exported dunders (``__version__``) are public too; other underscored names are not
    return [n for n in names if not n.startswith("_") or (n.startswith("__") and n.endswith("__"))]


def _public_modules() -> list[str]:
    import hiercls

    found = ["hiercls"]
    for info in pkgutil.walk_packages(hiercls.__path__, "hiercls."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def _api_pages() -> list[Path]:
    return sorted((DOCS / "api").glob("*.md"))


def test_every_api_identifier_imports() -> None:
    directives = [(p, ident) for p in _api_pages() for ident, _ in _directives(p)]
    assert len(directives) >= 2, "no ::: blocks found on the API pages"
    broken = []
    for page, ident in directives:
        try:
            _resolve(ident)
        except Exception as err:
            broken.append(f"{_rel(page)}: ::: {ident} -> {err!r}")
    assert not broken, "\n".join(broken)


def test_every_public_name_has_an_api_page() -> None:
    """Each name in a public module's __all__ is rendered by some API page (directly or re-exported)."""
    documented: set[int] = set()
    for page in _api_pages():
        for ident, opts in _directives(page):
            obj = _resolve(ident)
            if hasattr(obj, "__path__") or type(obj).__name__ == "module":
                for name in opts.get("members") or _public_names(obj):
                    documented.add(id(getattr(obj, name)))
            else:
                documented.add(id(obj))
    missing = []
    for modname in _public_modules():
        try:
            module = importlib.import_module(modname)
        except ImportError as err:  # an optional dependency missing: the page cannot build either
            pytest.fail(f"{modname} does not import ({err}); its API page cannot be built")
        missing += [f"{modname}.{n}" for n in _public_names(module) if id(getattr(module, n)) not in documented]
    assert not missing, "public names with no API page (add a ::: block under docs/api/): " + ", ".join(missing)


def _nav_files(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for v in nav.values() for f in _nav_files(v)]
    return []


def test_nav_lists_every_page_and_only_existing_pages() -> None:
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    nav = _nav_files(config["nav"])
    missing_files = [f for f in nav if not (DOCS / f).is_file()]
    assert not missing_files, f"nav entries with no page: {missing_files}"
    not_in_nav = sorted({_rel(p) for p in _pages()} - set(nav))
    assert not not_in_nav, f"pages missing from the nav of mkdocs.yml: {not_in_nav}"
    assert all(f"api/{p.name}" in nav for p in _api_pages())


def test_extra_assets_are_vendored() -> None:
    """Maths must render without a CDN: the scripts and styles the site loads ship in docs/."""
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    assets = list(config.get("extra_javascript", [])) + list(config.get("extra_css", []))
    assert any("mathjax" in a for a in assets)
    for asset in assets:
        assert "://" not in asset and (DOCS / asset).is_file(), asset
    fonts = DOCS / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) >= 20


def _attribute_docstrings() -> list[tuple[str, str, str]]:
    """``(module, name, docstring)`` of every module-level assignment of ``hiercls`` followed by a string:
    the attribute docstrings that the API pages render, which ``--doctest-modules`` does not collect."""
    import ast

    found = []
    for path in sorted((REPO / "hiercls").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, nxt in itertools.pairwise(body):
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if (
                isinstance(target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                found.append((module, target.id, nxt.value.value))
    return found


def test_attribute_docstring_examples_run() -> None:
    import doctest

    found = _attribute_docstrings()
    assert any(name == "RULE_OPTIONS" for _, name, _ in found)  # the collector sees them
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    ran, failed = 0, []
    for module, name, doc in found:
        globs = dict(vars(importlib.import_module(module)))
        test = parser.get_doctest(doc, globs, f"{module}.{name}", module, 0)
        ran += len(test.examples)
        report: list[str] = []
        if runner.run(test, out=report.append).failed:
            failed.append(f"{module}.{name}:\n{''.join(report)}")
    assert ran > 0 and not failed, "\n".join(failed)
