"""The import graph is a tree (DESIGN.md): no cycle, every import at the top of its file, each
layer importing only the layers above it, nets only tinyhw's public API, and the analyses
nothing from an entry point."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data", "tinyhw", "nets", "train")
# What each layer may import from the others (DESIGN.md: each layer only the ones above it).
ALLOWED = {"data": set(), "tinyhw": set(), "nets": {"data", "tinyhw"},
           "train": {"data", "tinyhw", "nets"}}
# nets builds models from these, as a user of tinyhw would.
PUBLIC_API = {"tinyhw", "tinyhw.functional", "tinyhw.nn", "tinyhw.init", "tinyhw.optim"}
ENTRY_POINTS = {"train.lm", "train.image", "train.analyze", "train.report", "train.demo"}
# The only imports inside functions in tinyhw, of optional dependencies whose import has a cost
# or a side effect: cupy (seconds, and CUDA initialised) is imported by backend._import_cupy on
# first use of the GPU, not on `import tinyhw`; mpi4py (importing it initialises MPI) by
# distributed._import_mpi only under an MPI launcher; cupy's NCCL bindings (not loaded by
# `import cupy`) by distributed._import_nccl only for several ranks on GPUs.
LAZY_IMPORTS = {("tinyhw/backend.py", "_import_cupy"): {"cupy", "cupyx"},
                ("tinyhw/distributed.py", "_import_mpi"): {"mpi4py"},
                ("tinyhw/distributed.py", "_import_nccl"): {"cupy"},
                ("tinyhw/ops/fast/jit.py", "_import_numba"): {"numba"},   # the fast extra
                ("tinyhw/ops/fast/jit.py", "prepare_blas"): {"scipy"}}


def _files(package):
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in _files(package)}


def _imports(path, top_level_only):
    """(node, absolute names) of the imports of a file: `from a.b import c` names a.b.c when
    that is a module of the project, else a.b; relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[:len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            yield node, [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                         for a in node.names]


def _functions_of(tree):
    """{import node: name of the function that holds it} for imports inside functions."""
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    owner.setdefault(node, fn.name)
    return owner


def test_every_module_imports_first_in_a_fresh_interpreter():
    """`python -c "import M"` for every module M, each in its own interpreter (four at a time):
    an import cycle shows up as an ImportError, or a name missing from a half-initialised
    module, when the module imported first is one of the cycle."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    names, failed = sorted(MODULES), {}
    for start in range(0, len(names), 4):
        batch = [(name, subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                                         env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
                 for name in names[start:start + 4]]
        for name, process in batch:
            _, err = process.communicate(timeout=120)
            if process.returncode:
                failed[name] = err.strip().splitlines()[-1]
    assert not failed, failed


def test_imports_in_tinyhw_are_at_the_top_of_their_file():
    found = {}
    for path in _files("tinyhw"):
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        owner = _functions_of(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                where = (str(path.relative_to(ROOT)), owner.get(node, f"line {node.lineno}"))
                names = {a.name.split(".")[0] for a in node.names} if isinstance(
                    node, ast.Import) else {node.module}
                found.setdefault(where, set()).update(names)
    unexpected = {where: names - LAZY_IMPORTS.get(where, set())
                  for where, names in found.items() if names - LAZY_IMPORTS.get(where, set())}
    assert not unexpected, f"imports inside functions: {unexpected}"
    assert found[("tinyhw/backend.py", "_import_cupy")] == {"cupy", "cupyx"}


def test_the_import_graph_has_no_cycle():
    """Top-level imports between the project's modules form a directed acyclic graph."""
    graph = {name: sorted({target for _, targets in _imports(path, True) for target in targets
                           if target in MODULES and target != name})
             for name, path in MODULES.items()}
    state = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = trail[trail.index(name):] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        state[name] = "open"
        for target in graph[name]:
            visit(target, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_each_layer_imports_only_the_layers_above_it():
    wrong = []
    for name, path in MODULES.items():
        layer = name.split(".")[0]
        for node, targets in _imports(path, False):
            for target in targets:
                other = target.split(".")[0]
                if other in PACKAGES and other != layer and other not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not wrong, wrong


def test_nets_uses_only_the_public_api():
    """nets/ builds models as a user would: tinyhw, tinyhw.functional, .nn, .init, .optim."""
    wrong = []
    for path in _files("nets"):
        for node, targets in _imports(path, False):
            for target in targets:
                if target.split(".")[0] == "tinyhw" and target not in PUBLIC_API:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not wrong, wrong


def test_the_analyses_import_nothing_from_an_entry_point():
    wrong = []
    for path in _files("train/analysis"):
        for node, targets in _imports(path, False):
            for target in targets:
                if any(target == e or target.startswith(f"{e}.") for e in ENTRY_POINTS):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not wrong, wrong
