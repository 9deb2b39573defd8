"""The suite and the library work with only ``pip install -e . pytest``: the extras are optional.

Two checks: no test module imports an optional package at its top level (the file would error
at collection instead of its tests skipping; the rule is in tests/conftest.py), and every
lightnets module imports, and a model builds and runs, with all of them made unimportable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
#: import names of the optional packages: the extras of pyproject.toml (pillow is PIL, scikit-learn
#: sklearn). numpy is not one: safetensors[torch], a dependency, brings it.
OPTIONAL = {
    "PIL", "h5py", "keras", "matplotlib", "onnx", "onnxruntime", "onnxscript", "optuna", "pycocotools", "sklearn",
    "timm", "torchvision",
}
_DISTRIBUTIONS = {"pillow": "PIL", "scikit-learn": "sklearn"}
_NOT_EXTRAS = {"pytest", "ruff", "torch"}  # the test runner, the linter, and the core dependency


def top_level_imports(source: str, name: str) -> list[str]:
    """``file:line: module`` for each optional package a module imports unconditionally at its top level.

    A top-level ``try:`` or ``if`` is left alone: guarding the import is the point; an import
    inside a function runs only when a test that asked for the extra calls it.
    """
    found = []
    for node in ast.parse(source, name).body:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.split(".")[0] in OPTIONAL:
                found.append(f"{name}:{node.lineno}: {module}")
    return found


def test_no_test_module_imports_an_optional_extra_at_top_level():
    files = sorted(TESTS.glob("*.py"))
    assert len(files) > 15
    found = [hit for f in files for hit in top_level_imports(f.read_text(encoding="utf8"), f"tests/{f.name}")]
    assert not found, (
        "top-level imports of optional packages (use a fixture from tests/conftest.py or pytest.importorskip):\n  "
        + "\n  ".join(found)
    )


def test_the_checker_flags_synthetic_imports():
    source = (
        "import os\nimport PIL.Image as image\nfrom matplotlib import pyplot\nimport torch, onnx.helper\n"
        "try:\n    import timm\nexcept ImportError:\n    timm = None\n"
        "def f():\n    import optuna\n"
        "keras = __import__('pytest').importorskip('keras')\nfrom . import conftest\n"
    )
    assert top_level_imports(source, "t.py") == ["t.py:2: PIL.Image", "t.py:3: matplotlib", "t.py:4: onnx.helper"]


def test_the_optional_list_covers_every_extra_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((TESTS.parent / "pyproject.toml").read_text(encoding="utf8"))["project"]
    requirements = [r for extra in project["optional-dependencies"].values() for r in extra]
    names = {_requirement_name(r) for r in requirements} - _NOT_EXTRAS
    assert {_DISTRIBUTIONS.get(n, n) for n in names} == OPTIONAL
    assert {_requirement_name(r) for r in project["dependencies"]} == {"torch", "safetensors"}
    assert "safetensors[torch]" in project["dependencies"][1]  # numpy, which safetensors.torch.save needs


def _requirement_name(requirement: str) -> str:
    for i, char in enumerate(requirement):
        if not (char.isalnum() or char in "-_."):
            return requirement[:i].lower()
    return requirement.lower()


def test_the_library_works_without_any_extra():
    """In a fresh interpreter where every optional package fails to import (None in sys.modules)."""
    code = (
        "import sys\n"
        f"for name in {sorted(OPTIONAL)!r}:\n"
        "    sys.modules[name] = None\n"
        "import importlib, pkgutil, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import lightnets, torch\n"
        "names = [m.name for m in pkgutil.walk_packages(lightnets.__path__, 'lightnets.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "model = lightnets.create_model('mobilenet_v3_small_050', num_classes=3).eval()\n"
        "with torch.no_grad():\n"
        "    print(len(names), tuple(model(torch.randn(1, 3, 32, 32)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    count, shape = result.stdout.split(maxsplit=1)
    assert int(count) > 40 and shape.strip() == "(1, 3)"
