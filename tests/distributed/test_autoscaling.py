"""The benchmark on an autoscaling cluster: workers come from zero, and go when idle.

Ray's own fake multi-node provider (what Ray's autoscaler tests use), head at 0 CPUs as in
``cluster.yaml``, one worker type of 1 CPU from 0 to 2 nodes. The cluster runs in its own PID,
network and mount namespaces (``tests/support/autoscaling_probe.py`` says why).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = REPO_ROOT / "tests" / "support" / "autoscaling_probe.py"

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def namespaced(command: str) -> list[str]:
    """``command`` in new PID, network (loopback only) and mount namespaces, with its own
    /tmp/ray."""
    return [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--net",
        "--mount",
        "bash",
        "-c",
        f"ip link set lo up && mkdir -p /tmp/ray && mount -t tmpfs none /tmp/ray && {command}",
    ]


@pytest.fixture
def can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root with unshare and ip (util-linux, iproute2) for the namespaces")


def test_the_benchmark_scales_up_from_zero_workers_and_releases_them_when_idle(
    can_unshare, tmp_path
):
    out = tmp_path / "out"
    command = (
        f"export PATH={Path(sys.executable).parent}:$PATH && cd {REPO_ROOT} && "
        f"{sys.executable} {PROBE} {sys.executable} "
        f"pipelines/full_benchmark.py --smoke-test -q --address auto --out {out}"
    )
    finished = subprocess.run(namespaced(command), capture_output=True, text=True, timeout=400)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, finished.stdout[-2000:] + finished.stderr[-2000:]
    seen = json.loads(lines[-1].removeprefix("PROBE "))
    assert seen["returncode"] == 0, finished.stderr[-2000:]
    assert seen["workers_at_start"] == 0  # the head runs no tasks: nothing until work arrives
    assert seen["max_workers_seen"] == 2  # the 12 runs and the build want more than one CPU
    assert seen["workers_after_idle"] == 0  # released after the idle timeout
    assert (out / "results.md").is_file()
