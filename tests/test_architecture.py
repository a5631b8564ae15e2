"""Imports go one way (docs/ARCHITECTURE.md): an AST walk over ``src/visattn``, function-level imports included.

Each module belongs to a *unit* (a sub-package such as ``models``, or a top-level module such as
``checkpoint``); a unit may import only the units listed for it in ``ALLOWED`` (and itself). The
deprecation shims that keep moved modules importable from their old paths are the only exceptions,
listed in ``SHIMS``. A second check forbids import cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "visattn"

BASE = {"_validate", "registry", "_dist", "_deprecated", "_files"}
APPS = {"cli", "demo", "report", "callbacks", "export", "__main__", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "_validate": set(),
    "registry": set(),
    "_dist": set(),
    "_deprecated": set(),
    "_files": set(),
    "functional": BASE,
    "checkpoint": BASE,
    "learning": BASE,
    "attention": BASE | {"functional"},
    "data": BASE | {"functional"},
    "retrofit": BASE | {"functional", "attention"},
    "models": BASE | {"functional", "attention", "learning", "checkpoint", "retrofit"},
    "viz": BASE | {"functional", "attention", "models"},
    "train": BASE | {"functional", "attention", "data", "models", "learning", "checkpoint", "retrofit"},
    # staged workflows over models and the engine (two-level attention): below the apps, above train
    "pipelines": BASE
    | {"functional", "attention", "data", "models", "learning", "checkpoint", "retrofit", "train", "viz"},
}
EVERYTHING = set(ALLOWED) | APPS
for _app in APPS:
    ALLOWED[_app] = EVERYTHING

# Deprecation paths (old module paths re-exporting the new ones, deprecated methods forwarding to
# the code's new home) may import exactly these modules upward; remove each entry with its shim.
SHIMS: dict[str, set[str]] = {
    "visattn.train.tb_images": {"visattn.viz.tensorboard"},  # shim of the moved module
    "visattn.viz.report": {"visattn.report"},  # shim of the moved module
    "visattn.viz": {"visattn.report"},  # visattn.viz.write_report (lazy module __getattr__)
    "visattn.attention._se_fused": {"visattn.models._se_fused"},  # shim of the moved module
    "visattn.attention.se": {"visattn.models._se_fused"},  # SqueezeExcite.residual_relu/norm_residual_relu
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``visattn`` module imported anywhere in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # ``from visattn.pkg import sub`` may name a submodule: count it as that module
            for a in node.names:
                if (SRC.parent / Path(*f"{mod}.{a.name}".split("."))).with_suffix(".py").is_file():
                    found.append((node.lineno, f"{mod}.{a.name}"))
    return [(line, m) for line, m in found if m == "visattn" or m.startswith("visattn.")]


FILES = sorted(SRC.rglob("*.py"))


def test_every_unit_has_a_rule():
    units = {_unit(_module_name(f)) for f in FILES}
    assert units <= set(ALLOWED), f"add a rule for {sorted(units - set(ALLOWED))} to ALLOWED"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_one_way(path):
    me = _module_name(path)
    unit = _unit(me)
    allowed = ALLOWED[unit] | {unit}
    wrong = [
        f"line {line}: {mod} ({_unit(mod)})"
        for line, mod in _imports(path)
        if _unit(mod) not in allowed
        and mod not in SHIMS.get(me, set())
        and not (mod == "visattn" and unit in APPS)
    ]
    assert not wrong, f"{me} ({unit}) may import only {sorted(allowed)}; it imports " + "; ".join(wrong)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "visattn" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "visattn" / "train").mkdir()
    (tmp_path / "visattn" / "train" / "engine.py").write_text("")
    bad = pkg / "bad.py"
    bad.write_text("def f():\n    from visattn.train import engine\n    from ..viz import render\n")
    global SRC
    old, SRC = SRC, tmp_path / "visattn"
    try:
        mods = [m for _, m in _imports(bad)]
    finally:
        SRC = old
    assert "visattn.train" in mods and "visattn.train.engine" in mods and "visattn.viz" in mods


def _graph() -> dict[str, set[str]]:
    names = {_module_name(f) for f in FILES}
    graph: dict[str, set[str]] = {}
    for f in FILES:
        me = _module_name(f)
        shim = SHIMS.get(me, set())
        graph[me] = {m for _, m in _imports(f) if m in names and m != me and m not in shim}
    return graph


def test_no_import_cycles_between_modules():
    """No module reaches itself through imports (function-level ones included); package
    ``__init__`` files are left out, since importing any submodule runs them first anyway; so are the
    deprecation paths of ``SHIMS``."""
    graph = {m: {t for t in ts if t in _graph_nodes()} for m, ts in _graph().items() if m in _graph_nodes()}
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _graph_nodes() -> set[str]:
    return {_module_name(f) for f in FILES if f.name != "__init__.py"}


def test_every_shim_entry_is_still_needed():
    """An allow-listed upward import that no longer exists must leave ``SHIMS`` too."""
    files = {_module_name(f): f for f in FILES}
    for module, targets in SHIMS.items():
        assert module in files, f"{module} is gone; remove it from SHIMS"
        imported = {m for _, m in _imports(files[module])}
        assert targets <= imported, f"{module} no longer imports {sorted(targets - imported)}; update SHIMS"
