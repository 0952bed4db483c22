"""The scale benchmark's harness: stages in subprocesses, figures and flags printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_prints_every_stage_with_memory_and_the_evaluation_share(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "scale.py"),
            "--smoke",
            "--sizes",
            "150,300",
            "--stages",
            "generate,load,ig-gmf",
            "--json",
            str(tmp_path / "rows.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    stages = {row["stage"] for row in rows}
    assert stages == {
        "generate",
        "load",
        "trainer setup (gmf)",
        "ig epoch (gmf)",
        "evaluation (gmf)",
    }
    assert all(row["seconds"] > 0 and row["peak"] > 50 * 2**20 and not row["error"] for row in rows)
    assert "share of a 30-epoch run's wall time spent evaluating" in completed.stdout
    assert "x linear" in completed.stdout
