"""The package imports downward only: checked from the source, and the checker catches a breach."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "package_graph.py"
spec = importlib.util.spec_from_file_location("package_graph", SCRIPT)
package_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(package_graph)


def test_every_package_of_byol_imports_only_from_the_layers_below_it():
    assert package_graph.violations(package_graph.graph()) == []


def test_core_imports_nothing_but_core_and_the_method_nothing_above_methods():
    edges = package_graph.graph()
    assert "core" not in edges
    assert set(edges["methods"]) <= {"core", "config", "data", "nets", "losses"}


def test_an_upward_import_inside_a_function_or_via_from_byol_import_is_caught(tmp_path):
    package = tmp_path / "byol"
    for folder in ("core", "data", "train"):
        (package / folder).mkdir(parents=True)
    (package / "core" / "files.py").write_text("import os\n")
    (package / "train" / "loop.py").write_text("from byol.core import files\nfrom byol.data import views\n")
    (package / "data" / "views.py").write_text("def f():\n    from byol.train.loop import run\n")
    (package / "config.py").write_text("from byol import train\n")
    found = package_graph.violations(package_graph.graph(package))
    assert found == ["config -> train (config.py)", "data -> train (data/views.py)"]
