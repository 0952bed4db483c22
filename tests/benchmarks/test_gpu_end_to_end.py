"""The GPU benchmark runs where Ray and MLflow are not installed (the device machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Run the script with imports of Ray and MLflow failing, as on a machine without them.
_WITHOUT_RAY = """
import runpy, sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Missing())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("ray", "mlflow"))
print("ray or mlflow modules loaded:", loaded)
"""


def test_gpu_benchmark_runs_without_ray_or_mlflow():
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_RAY,
            str(REPO_ROOT / "benchmarks" / "gpu_end_to_end.py"),
            "--device",
            "cpu",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--backbones",
            "gmf",
            "--modes",
            "eager",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "gmf            eager: train 1 epochs" in completed.stdout
    assert "ray or mlflow modules loaded: []" in completed.stdout
