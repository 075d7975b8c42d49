"""The public API: lazy at run time (a fast `byol --help`), visible to type checkers and IDEs."""

import ast
import subprocess
import sys
from pathlib import Path

import byol

INIT = Path(byol.__file__)


def test_every_public_name_is_imported_for_type_checkers_from_where_it_loads():
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    typed = {alias.name: node.module for node in block.body for alias in node.names}
    assert typed == byol._WHERE


def test_every_public_name_loads_and_importing_byol_loads_no_torch():
    assert all(getattr(byol, name) is not None for name in byol.__all__)
    loaded = subprocess.run([sys.executable, "-c", "import sys, byol; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_the_built_wheel_ships_py_typed_so_type_checkers_read_the_annotations(tmp_path):
    """PEP 561: without byol/py.typed in the installed package, mypy and pyright ignore its types."""
    import zipfile

    root = INIT.parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("byol-*.whl"))
    assert "byol/py.typed" in zipfile.ZipFile(wheel).namelist()

