"""The import graph of byol's packages, and the rule it keeps: every package imports only
from itself and from the layers below it.

    python scripts/package_graph.py        # prints the graph; exit 1 and the offending imports if the rule breaks

Layers, bottom up: `core` (errors, file I/O and safe loading, progress, device and
precision, distributed helpers, schedules) < `config` < `data`, `nets`, `losses`, `checkpoint` <
`methods` < `eval` < `train` < `report`, `export` < `onnx_model` < `compare`, `classifier` < `cli` <
`__main__`.
Every import counts, at the top of a file or inside a function.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "byol"
LAYERS = [{"core"}, {"config"}, {"data", "nets", "losses", "checkpoint"}, {"methods"}, {"eval"}, {"train"}, {"report", "export"},
          {"onnx_model"}, {"compare", "classifier"}, {"cli"}, {"__main__"}]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def unit(module: str) -> str | None:
    """The package (or top-level module) a dotted byol module belongs to; None for `byol` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "byol" and len(parts) > 1 else None


def is_module(name: str, package: Path) -> bool:
    return (package / name).is_dir() or (package / f"{name}.py").is_file()


def imported(tree: ast.AST, here: str, package: Path) -> list[str]:
    """Every byol module named by an import in `tree` (`from byol import config` names byol.config)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "byol":  # a module of the package, or a name such as __version__
                names += [f"byol.{alias.name}" for alias in node.names if is_module(alias.name, package)]
            else:
                names.append(node.module)
    return [name for name in names if name.startswith("byol.") and unit(name) != here]


def graph(package: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """{unit: {imported unit: [files that import it]}} over every module of the package but its
    `__init__.py` (which names the public API lazily, by strings)."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative == Path("__init__.py"):
            continue
        here = relative.parts[0].removesuffix(".py")
        for name in imported(ast.parse(path.read_text()), here, package):
            target = unit(name)
            if target and relative.as_posix() not in edges[here][target]:
                edges[here][target].append(relative.as_posix())
    return edges


def violations(edges: dict[str, dict[str, list[str]]]) -> list[str]:
    """Imports of a unit in the same layer or above (or of one no layer names)."""
    found = []
    for source, targets in edges.items():
        for target, files in targets.items():
            if source not in LAYER or target not in LAYER or LAYER[target] >= LAYER[source]:
                found.append(f"{source} -> {target} ({', '.join(files)})")
    return sorted(found)


def main() -> int:
    edges = graph()
    for level, names in enumerate(LAYERS):
        for source in sorted(names & set(edges)):
            print(f"{level} {source:<10} -> {', '.join(sorted(edges[source]))}")
    broken = violations(edges)
    for line in broken:
        print(f"upward or sideways: {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
