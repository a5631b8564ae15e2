"""Griffe extension for the docs site: docstring doctests and RST tables become Markdown code blocks.

visattn's docstrings carry doctests anywhere in the text (pytest runs them with ``--doctest-modules``),
not only under an ``Examples:`` heading. Markdown would read ``>>>`` as nested quotes and a printed
``['a', 'b']`` as a link reference, so each doctest block (from its first ``>>>`` line to the next blank
line or dedent) is wrapped in a ``pycon`` fence before the Google-style parser reads the docstring.
RST simple tables (``=====  =====`` borders), which Markdown would read as headings, are fenced as text.
Loaded by ``mkdocs.yml`` (``extensions: [docs/hooks/doctest_fences.py]``); not part of the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["DoctestFences", "fence_doctests"]

_RST_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def fence_doctests(text: str) -> str:
    r"""Fence every doctest block (```` ```pycon ````) and RST simple table (```` ```text ````) of ``text``.

    >>> fence_doctests("Text.\n\n>>> 1 + 1\n2\n\nMore.").splitlines()
    ['Text.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'More.']
    """
    out: list[str] = []
    lines = text.splitlines()
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip(" ")
        if stripped.startswith("```"):
            in_fence = not in_fence
        if not in_fence and _RST_BORDER.match(
            line
        ):  # an RST simple table: border, header, border, rows, border
            end, borders = i, 0
            while end < len(lines) and borders < 3:
                borders += bool(_RST_BORDER.match(lines[end]))
                end += 1
            pad = " " * _indent(line)
            out += [pad + "```text", *lines[i:end], pad + "```"]
            i = end
            continue
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        ind = _indent(line)
        block = []
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= ind:
            block.append(lines[i])
            i += 1
        pad = " " * ind
        out += [pad + "```pycon", *block, pad + "```"]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrite each object's docstring with :func:`fence_doctests` once the tree is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and (">>>" in obj.docstring.value or "==" in obj.docstring.value):
            obj.docstring.value = fence_doctests(obj.docstring.value)
