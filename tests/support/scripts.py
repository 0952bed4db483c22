"""Importing a command-line script (``pipelines/*.py``, ``benchmarks/*.py``) as a module, so a
test can call its functions: the scripts are files, not modules of the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """The script at ``relative_path`` (from the repository root), imported under
    ``module_name`` (distinct per test module: each gets its own copy)."""
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
