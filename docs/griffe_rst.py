"""A griffe extension for the API reference: the reStructuredText left in Google-style docstrings.

The docstrings of ``hiercls`` are Google style and rendered as Markdown by mkdocstrings,
but a few reStructuredText habits remain in them, which Markdown would show literally.
This extension (loaded by mkdocstrings, see ``mkdocs.yml``) rewrites them when the
package is loaded, without touching the code:

* Sphinx roles such as ``:func:`lca_distance``` or ``:class:`~hiercls.Taxonomy``` become
  *optional* autorefs cross-references: a link when the target is rendered somewhere on
  the site, plain code otherwise, so an unresolvable name never breaks
  ``mkdocs build --strict``. Names resolve like Sphinx's: the dotted path as written, else
  relative to the object, its class, its module and the enclosing packages; ``~`` shows
  the last part only.
* Simple tables (columns under runs of ``=``, continuation lines with an empty first
  column) become Markdown tables.
* A paragraph ending in ``::`` (which introduces a literal block) ends in ``:``.
* Parameters named with a leading underscore (internal, such as ``Taxonomy``'s ``_order``) are
  left out of the rendered signatures.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>func|meth|class|mod|attr|data|obj|exc|const|term|ref):`(?P<target>[^`]+)`")
_BORDER = re.compile(r"^(?P<indent>\s*)=+(?:[ \t]+=+)+[ \t]*$")


# ----------------------------------------------------------------------------- roles


def _find(obj: griffe.Object, loader: griffe.GriffeLoader, name: str) -> str | None:
    """The path of the object ``name`` refers to from ``obj``, if it exists."""
    name = name.strip().removesuffix("()")
    candidates = [name]
    scope: Any = obj
    while scope is not None:  # the object itself, its class, module and packages
        candidates.append(f"{scope.path}.{name}")
        scope = scope.parent
    for path in candidates:
        try:
            found = loader.modules_collection.get_member(path)
        except Exception:
            continue
        if found is not None:
            return path
    return None


def _roles(text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if match["role"] in ("term", "ref"):
            return f"*{target}*"
        short = target.startswith("~")
        target = target.lstrip("~.!")
        display = target.rsplit(".", 1)[-1] if short else target
        path = _find(obj, loader, target)
        if path is None:
            return f"`{display}`"
        return f'<autoref identifier="{path}" optional><code>{display}</code></autoref>'

    return _ROLE.sub(replace, text)


# ----------------------------------------------------------------------------- simple tables


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for k, (start, _) in enumerate(spans):
        end = spans[k + 1][0] if k + 1 < len(spans) else len(line)
        cells.append(line[start:end].strip())
    return cells


def _markdown_table(rows: list[list[str]], header: list[str]) -> list[str]:
    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [fmt(header), "|" + "|".join("---" for _ in header) + "|", *(fmt(r) for r in rows)]


def _tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        # a simple table: border, header row(s), border, body rows, border
        borders = [i]
        j = i + 1
        while j < len(lines) and len(borders) < 3 and lines[j].strip():
            if _BORDER.match(lines[j]):
                borders.append(j)
            j += 1
        if len(borders) < 3:
            out.append(lines[i])
            i += 1
            continue
        spans = _columns(lines[i])
        header_lines = lines[borders[0] + 1 : borders[1]]
        body_lines = lines[borders[1] + 1 : borders[2]]
        rows: list[list[str]] = []
        for block, target in ((header_lines, "header"), (body_lines, "body")):
            merged: list[list[str]] = []
            for line in block:
                cells = _cells(line, spans)
                if merged and not cells[0]:  # continuation of the row above
                    merged[-1] = [f"{a} {b}".strip() for a, b in zip(merged[-1], cells)]
                else:
                    merged.append(cells)
            if target == "header":
                header = [" ".join(c) for c in zip(*merged)] if merged else [""] * len(spans)
                header = [h.strip() for h in header]
            else:
                rows = merged
        indent = _BORDER.match(lines[i])["indent"]
        if out and out[-1].strip():
            out.append("")
        out.extend(indent + row for row in _markdown_table(rows, header))
        i = borders[2] + 1
    return "\n".join(out)


# ----------------------------------------------------------------------------- literal blocks


def _literal_markers(text: str) -> str:
    text = re.sub(r"(?m)^[ \t]*::[ \t]*$", "", text)  # a paragraph of its own: drop it
    return re.sub(r"(?m)(\S)::[ \t]*$", r"\1:", text)  # "text::" -> "text:"


class RstLeftovers(griffe.Extension):
    """Rewrite roles, simple tables and ``::`` in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen or obj.is_alias:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                value = obj.docstring.value
                if "=" in value:
                    value = _tables(value)
                if "::" in value:
                    value = _literal_markers(value)
                if ":`" in value:
                    value = _roles(value, obj, loader)
                obj.docstring.value = value
            if obj.is_function:  # keyword-only internals (Taxonomy's _order, _owned...) are not the API
                for name in [p.name for p in obj.parameters if p.name.startswith("_") and not p.name.startswith("__")]:
                    del obj.parameters[name]
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
