"""A griffe extension for the API reference: Sphinx cross-reference roles become links.

The docstrings of ``hiercls`` are Google style, and some of them refer to other
objects the Sphinx way, as in ``:func:`lca_distance``` or ``:class:`~hiercls.Taxonomy```.
Markdown would show those roles literally. This extension (loaded by mkdocstrings,
see ``mkdocs.yml``) rewrites each role into an *optional* autorefs cross-reference:
a link when the target is rendered somewhere on the site, plain code otherwise, so
an unresolvable name never breaks ``mkdocs build --strict``.

Names are resolved like Sphinx does: a dotted path as written, else relative to the
object's class, its module, and the enclosing packages. ``~`` shows the last part only.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>func|meth|class|mod|attr|data|obj|exc|const|term|ref):`(?P<target>[^`]+)`")


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
        except Exception:  # noqa: BLE001 - griffe raises several kinds for a missing path
            continue
        if found is not None:
            return path
    return None


def _rewrite(text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
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


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen or obj.is_alias:
                return
            seen.add(id(obj))
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, loader)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
