"""The documentation cannot rot: every tutorial's Python runs, and the site's sources are consistent.

Each ``docs/tutorials/*.md`` is a script split into ```` ```python ```` blocks: they run in order in one
namespace, in a temporary working directory (tutorials write their toy data and runs there), on one CPU
thread. The mkdocs build itself (``make docs``, ``mkdocs build --strict``) is not run here: it needs the
``docs`` extra, and the figures and links it checks are checked below without it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```` ```python ```` fences of ``markdown``, in order."""
    return FENCE.findall(markdown)


def test_python_blocks_are_extracted_in_order():
    md = "text\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(md) == ["a = 1\n", "b = a + 1\n"]


def test_every_tutorial_has_code():
    assert {p.stem for p in TUTORIALS} >= {"retrofit", "stn", "attention"}
    for p in TUTORIALS:
        assert len(python_blocks(p.read_text())) >= 2, p.name


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [page.name])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": f"docs_tutorial_{page.stem}"}
    try:
        for i, code in enumerate(python_blocks(page.read_text())):
            try:
                exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
            except Exception as e:  # name the block, so a broken tutorial is easy to find
                raise AssertionError(f"{page.name}, python block {i} failed: {e!r}\n{code}") from e
    finally:
        torch.set_num_threads(threads)
        _unregister_tutorial_models()


def _unregister_tutorial_models():
    """Tutorials register example models (``my_*``); keep the registry as other tests expect it."""
    from visattn.models import _registry

    for name in [n for n in _registry.list_models() if n.startswith("my_")]:
        _registry._MODELS._entries.pop(name, None)


def test_mechanism_figures_exist_and_are_small():
    """Every figure a page shows is committed and under 100 kB (``docs/gen_figures.py`` redraws them)."""
    shown = set()
    for page in DOCS.rglob("*.md"):
        for ref in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", page.read_text()):
            path = (page.parent / ref).resolve()
            shown.add(path.name)
            assert path.is_file(), f"{page.relative_to(DOCS)} shows a missing figure {ref}"
            assert path.stat().st_size < 100_000, f"{ref} is {path.stat().st_size} bytes"
    assert {"se.png", "residual_attention.png", "spatial_transformer.png", "ram.png", "dasnet.png"} <= shown


def test_nav_lists_existing_pages():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # mkdocs' !!python/name tags
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    assert cfg["docs_dir"] == "docs" and cfg["strict"] is True

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)
        elif isinstance(node, list):
            for v in node:
                yield from pages(v)

    listed = list(pages(cfg["nav"]))
    missing = [p for p in listed if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml nav lists missing pages: {missing}"
    for p in ("mechanisms/se.md", "tutorials/retrofit.md", "RESULTS.md", "results/stn.md"):
        assert p in listed
