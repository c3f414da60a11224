"""Layer rules of the ``prnet`` package, checked on the source (``ast``; nothing is imported).

LAYERS, lowest first: a module may import from its own layer or lower ones only. ``prnet/__init__.py``
and ``prnet/errors.py`` sit below every layer (importable by all). Module-level and function-level
imports both count. Only ``prnet/cli`` may import ``tfds_builders``; ``tfds_builders`` may import
``prnet`` up to the ``data`` layer. No import cycles between modules (``prnet`` and ``tfds_builders``).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The one definition of the layer order (the README mirrors it).
LAYERS = ("core", "model", "mesh", "data", "weights", "serving", "inference", "outputs", "evaluation", "training",
          "app", "cli")
#: Layer index of ``prnet`` itself and ``prnet.errors``: below ``core``.
BOTTOM = -1
#: ``tfds_builders`` may import ``prnet`` up to this layer.
BUILDERS_MAX_LAYER = LAYERS.index("data")
ROOT_PACKAGES = ("prnet", "tfds_builders")


def module_name(root: Path, path: Path) -> str:
    """``root/prnet/core/crop.py`` -> ``'prnet.core.crop'`` (a package's ``__init__.py`` -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path) -> dict:
    """``{module name: path}`` of every ``.py`` file under ``root/prnet`` and ``root/tfds_builders``."""
    found = {}
    for package in ROOT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def imports_of(name: str, path: Path, known) -> list:
    """``[(line, imported module)]`` for every import statement in the file (any nesting level).

    Relative imports are resolved against ``name``; ``from a import b`` gives ``a.b`` when that is a
    module in ``known``, else ``a``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
    return found


def layer_of(module: str):
    """Layer index of a ``prnet`` module (``BOTTOM`` for ``prnet`` / ``prnet.errors``), None if not in prnet."""
    parts = module.split(".")
    if parts[0] != "prnet":
        return None
    if len(parts) == 1 or parts[1] == "errors":
        return BOTTOM
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module}: prnet/{parts[1]} is not a known layer; add it to LAYERS in {__file__}")
    return LAYERS.index(parts[1])


def layer_violations(root: Path) -> list:
    """``'file:line: message'`` for each import breaking the layer rules."""
    modules = source_modules(root)
    problems = []
    for name, path in modules.items():
        rel = path.relative_to(root)
        top = name.split(".")[0]
        own = layer_of(name)
        for line, target in imports_of(name, path, modules):
            where = f"{rel}:{line}"
            target_top = target.split(".")[0]
            if top == "prnet" and target_top == "tfds_builders" and own != LAYERS.index("cli"):
                problems.append(f"{where}: {name} imports {target} (only prnet/cli may import tfds_builders)")
            elif top == "prnet" and target_top == "prnet" and layer_of(target) > own:
                problems.append(f"{where}: {name} (layer {_layer_name(own)}) imports {target} "
                                f"(higher layer {_layer_name(layer_of(target))})")
            elif top == "tfds_builders" and target_top == "prnet" and layer_of(target) > BUILDERS_MAX_LAYER:
                problems.append(f"{where}: {name} imports {target} (tfds_builders may import prnet up to "
                                f"the data layer, not {_layer_name(layer_of(target))})")
    return problems


def _layer_name(index: int) -> str:
    return "bottom (prnet, prnet.errors)" if index == BOTTOM else LAYERS[index]


def import_cycles(root: Path) -> list:
    """Each cycle of the module import graph as ``['a (file:line)', 'b (file:line)', ...]``: the
    strongly connected components with more than one module (or a module importing itself)."""
    modules = source_modules(root)
    edges = {}
    for name, path in modules.items():
        for line, target in imports_of(name, path, modules):
            if target in modules:
                edges.setdefault(name, {}).setdefault(target, line)
    # Tarjan's strongly connected components (iterative).
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, {}):
                        components.append(sorted(component))
    cycles = []
    for component in components:
        members = set(component)
        cycles.append([f"{m} ({modules[m].relative_to(root)}:{line} imports {t})"
                       for m in component for t, line in sorted(edges.get(m, {}).items()) if t in members])
    return cycles


# ----------------------------------------------------------------------------- the real tree

def test_every_prnet_folder_is_a_known_layer():
    folders = {p.name for p in (REPO / "prnet").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(LAYERS)


def test_no_import_from_a_higher_layer():
    problems = layer_violations(REPO)
    assert not problems, "layer violations:\n  " + "\n  ".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(REPO)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


# ----------------------------------------------------------------------------- the checker can fail

def _write(root: Path, files: dict):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel in files:  # every folder on the way is a package
        for parent in (root / rel).parents:
            if parent == root:
                break
            (parent / "__init__.py").touch()


def test_checker_reports_synthetic_violations(tmp_path):
    _write(tmp_path, {
        "prnet/errors.py": "",
        "prnet/core/crop.py": "import numpy\nfrom prnet.errors import X\n\n"
                              "def f():\n    from prnet.model.resfcn256 import build\n",      # function level
        "prnet/model/resfcn256.py": "from ..core import crop\nfrom prnet import errors\n",   # fine
        "prnet/data/posmap.py": "import tfds_builders.prnet_synthetic\n",                   # not cli
        "prnet/cli/demo.py": "import tfds_builders\nfrom prnet.training import trainer\n",  # fine
        "prnet/training/trainer.py": "from . import losses\n",
        "prnet/training/losses.py": "from .. import serving\nfrom ..serving import export\n",  # fine (lower)
        "prnet/serving/export.py": "from prnet.evaluation.report import write\n",          # relative-free
        "prnet/evaluation/report.py": "",
        "tfds_builders/prnet_synthetic/builder.py": "from prnet.data.posmap import make\n"
                                                    "from prnet.training.trainer import fit\n",
    })
    problems = layer_violations(tmp_path)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "prnet/core/crop.py:5: prnet.core.crop (layer core) imports prnet.model.resfcn256" in joined
    assert "prnet/data/posmap.py:1:" in joined and "only prnet/cli may import tfds_builders" in joined
    assert "prnet/serving/export.py:1:" in joined and "higher layer evaluation" in joined
    assert "tfds_builders/prnet_synthetic/builder.py:2:" in joined and "not training" in joined


def test_checker_reports_synthetic_cycles(tmp_path):
    _write(tmp_path, {
        "prnet/data/a.py": "from prnet.data import b\n",
        "prnet/data/b.py": "def f():\n    from .c import g\n",
        "prnet/data/c.py": "import prnet.data.a\n",
        "prnet/data/d.py": "from prnet.data import a\n",   # into the cycle, not part of it
        "prnet/mesh/self.py": "from prnet.mesh import self\n",
    })
    cycles = import_cycles(tmp_path)
    assert len(cycles) == 2, cycles
    names = [{entry.split(" ")[0] for entry in c} for c in cycles]
    assert {"prnet.data.a", "prnet.data.b", "prnet.data.c"} in names and {"prnet.mesh.self"} in names
    assert any("prnet/data/b.py:2 imports prnet.data.c" in entry for c in cycles for entry in c)


@pytest.mark.parametrize("source, expected", [
    ("from . import x", "pkg.mod.x"),
    ("from .. import y", "pkg.y"),
    ("from ..sub import z", "pkg.sub"),
])
def test_relative_imports_resolve(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    known = {"pkg.mod.x", "pkg.y", "pkg.sub"}
    assert imports_of("pkg.mod.m", path, known) == [(1, expected)]
