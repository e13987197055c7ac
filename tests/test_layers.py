"""The layers as a test (docs/design.md, "Layers"): every import under ede/ and flows/,
read with ast, against the arrows the design forbids.

Every import counts, including those inside functions (a lazy import is a dependency
the moment that function runs), and dependencies are followed transitively through ede
and flows modules. Importing `a.b.c` also runs the `__init__` of `a` and `a.b`; a
package's own function-level imports (`ede.__getattr__`'s lazy ESAD) count only for a
module that imports that package by name, not for every module below it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERNAL = ("ede", "flows")
STDLIB = frozenset(sys.stdlib_module_names)

# (layer, forbidden, why): modules in `layer` never reach `forbidden`, directly or through
# other ede/flows modules. "x.*" means x and everything under it; a plain name is exact
# (third-party packages are named by their top-level name).
NEVER = [
    ("ede.*", ("flows.*", "prefect"), "the library knows nothing of the flows or Prefect"),
    (
        "ede.core.*",
        ("ray", "prefect", "pyarrow", "pandas", "onnx", "onnxruntime"),
        "the method runs on torch, numpy and scikit-learn alone",
    ),
    (
        "ede.data.*",
        ("torch", "ede.distributed.*", "ede.export.*", "ede.scoring.*")
        + ("ede.cli.*", "ede.bench.*", "ede.pipeline.*"),
        "data is read and split without torch, below every consumer",
    ),
    ("ede.export.*", ("ede.distributed.*",), "an artifact is built without Ray"),
    ("ede.scoring.*", ("ede.distributed.*",), "scoring runs without Ray"),
    ("ede.scoring.*", ("torch",), "batch scoring runs on onnxruntime alone"),
    ("flows.score", ("ray", "torch"), "the scoring flow runs on onnxruntime alone"),
]
# (layer, allowed, why): every import written in a module of `layer` names one of these
# (or the standard library).
ONLY = [
    (
        "ede.core.*",
        ("numpy", "torch", "sklearn", "ede.core.*", "ede.storage", "ede"),
        "the core uses torch, numpy, scikit-learn, and reaches storage only via ede.storage",
    ),
    ("ede.storage", ("fsspec",), "ede.storage is the base: fsspec only, no other ede module"),
]


@dataclass(frozen=True)
class Edge:
    line: int
    text: str
    target: str  # an ede/flows module, or a third-party top-level package
    eager: bool  # runs when the module is imported (not inside a function)


def read_tree(root: Path = ROOT) -> dict[str, str]:
    """{"ede/core/model.py": source, ...} for every .py under ede/ and flows/."""
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for top in INTERNAL
        for p in sorted((root / top).rglob("*.py"))
    }


def module_name(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def matches(name: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return name == pattern[:-2] or name.startswith(pattern[:-1])
    return name == pattern


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(path: str, source: str, modules: set[str]) -> list[Edge]:
    name = module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges: list[Edge] = []

    def target(dotted: str) -> str:
        return dotted if dotted.split(".")[0] in INTERNAL else dotted.split(".")[0]

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return  # never runs
        if isinstance(node, ast.Import):
            for alias in node.names:
                edges.append(Edge(node.lineno, ast.unparse(node), target(alias.name), eager))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:  # relative: up from this module's package
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"  # `from pkg import submodule`
                dotted = sub if sub in modules else base
                edges.append(Edge(node.lineno, ast.unparse(node), target(dotted), eager))
        lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, eager and not lazy)

    visit(ast.parse(source, filename=path), True)
    return edges


def violations(sources: dict[str, str]) -> list[str]:
    """One line per forbidden import: `path:line: import ... rule`, empty when clean."""
    paths = {module_name(p): p for p in sources}
    graph = {m: import_edges(p, sources[p], set(paths)) for m, p in paths.items()}

    def reach(start: list[tuple[str, bool]]) -> dict[str, list[str]]:
        """Every name reachable from `start` ((module, follow lazy imports too) pairs),
        with the shortest chain to it. Importing a module also runs its packages'
        __init__s, of which only the module-level imports count."""
        chains: dict[str, list[str]] = {}
        seen: set[tuple[str, bool]] = set()
        queue = deque((name, full, [name]) for name, full in start)
        while queue:
            name, full, chain = queue.popleft()
            if (name, full) in seen:
                continue
            seen.add((name, full))
            chains.setdefault(name, chain)
            for edge in graph.get(name, []):
                if full or edge.eager:
                    queue.append((edge.target, True, [*chain, edge.target]))
                    queue.extend((p, False, [*chain, p]) for p in parents(edge.target))
        return chains

    found: list[str] = []
    for module, path in paths.items():
        # What importing this module runs: its packages' __init__s, then its imports.
        starts = [(Edge(1, f"(package {p})", p, True), [(p, False)]) for p in parents(module)]
        for edge in graph[module]:
            starts.append(
                (edge, [(edge.target, True)] + [(p, False) for p in parents(edge.target)])
            )
        for layer, allowed, why in ONLY:
            if not matches(module, layer):
                continue
            for edge in graph[module]:
                if edge.target not in STDLIB and not any(matches(edge.target, a) for a in allowed):
                    found.append(f"{path}:{edge.line}: `{edge.text}` imports {edge.target}: {why}")
        rules = [rule for rule in NEVER if matches(module, rule[0])]
        for edge, start in starts if rules else []:
            chains = reach(start)
            for layer, forbidden, why in rules:
                for bad in forbidden:
                    hits = sorted((c for n, c in chains.items() if matches(n, bad)), key=len)
                    if hits:
                        found.append(
                            f"{path}:{edge.line}: `{edge.text}` reaches {hits[0][-1]} "
                            f"({' -> '.join(hits[0])}): {layer} never {bad}: {why}"
                        )
    return found


def test_the_tree_keeps_its_layers():
    found = violations(read_tree())
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_a_forbidden_import_fails():
    tree = read_tree()
    before = set(violations(tree))
    leaks = {
        "ede/core/leak.py": "import ray\n",  # core imports Ray
        "ede/data/leak.py": "from ede.core.model import EncoderDecoderEncoder\n",  # -> torch
        "ede/scoring/leak.py": "def f():\n    from ..distributed import trainer\n",  # lazy
        "ede/export/leak.py": "from flows.retrain import retrain\n",  # the library -> flows
    }
    new = [v for v in violations({**tree, **leaks}) if v not in before]
    expected = {
        "ede/core/leak.py:1: `import ray` imports ray",
        "ede/core/leak.py:1: `import ray` reaches ray",
        "ede/data/leak.py:1: `from ede.core.model import EncoderDecoderEncoder` reaches torch",
        "ede/scoring/leak.py:2: `from ..distributed import trainer` reaches ede.distributed",
        "ede/scoring/leak.py:2: `from ..distributed import trainer` reaches torch",
        "ede/export/leak.py:1: `from flows.retrain import retrain` reaches flows.retrain",
    }
    for start in expected:
        assert any(v.startswith(start) for v in new), (start, new)
    assert all(v.split(":")[0] in leaks for v in new), new


def test_the_retraining_flows_process_loads_neither_torch_nor_onnxruntime():
    """Its steps run in Ray tasks (ede.pipeline.steps, docs/design.md): the lazy imports in
    their bodies, which the rules above count, never run in the flow's process; nor does
    importing the flow load matplotlib (the report draws it when it draws)."""
    code = (
        "import sys, flows.retrain; print(sorted(m for m in "
        "('torch', 'onnx', 'onnxruntime', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
