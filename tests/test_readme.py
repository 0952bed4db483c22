"""The README's newcomer path, run as written: its tested command blocks, in order, in a fresh copy
of the repository — the quick start, a training run, and a ``ray job submit`` to a local cluster.

The blocks are the ones README.md marks ``<!-- tested: NAME -->``, read from the README itself,
so a changed command is tested as changed. What the test changes, and why:

* the setup lines (``python3 -m venv``, ``pip install``) and ``pytest`` are not run: this
  interpreter already has the project installed, and the suite is what runs this test;
* :data:`SHRINK`: the smoke-test sizes instead of the README's (``--quick`` → one run of the
  ``--smoke-test`` profile, :data:`TRAIN_SHRINK`, the memory build engine), so the whole path
  takes a minute or two;
* the job block's cluster runs on 127.0.0.1 with its own ``--temp-dir`` and free ports, so
  another Ray on this machine is neither joined nor disturbed, and it is stopped by killing its
  own process group rather than with ``ray stop``, which stops every Ray process on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
TESTED_BLOCKS = ("quick-start", "training", "job")
SKIPPED_PREFIXES = ("python3 -m venv", "pip install", "pytest", "ray stop")
"""Lines of the tested blocks this test does not run (see the module docstring)."""
SHRINK = (
    (
        "full_benchmark.py --quick",
        "full_benchmark.py --smoke-test --methods none --seeds 1 --ratios ''",
    ),
    ("build_data.py", "build_data.py --engine memory"),
)
"""``(README text, what runs instead)``: the smoke-test sizes of the same commands."""
TRAIN_SHRINK = "--smoke-test --set batch_size=1024 --set test_batch_size=1024"
"""Added to every ``train.py`` command: 2 epochs of a small model on the same dataset, in large
batches (the smoke test's 64 rows take 16 times the steps)."""
COMMAND_TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def readme_blocks(text: str) -> dict[str, list[str]]:
    """Each ``<!-- tested: NAME ... -->`` block's commands: continuation lines joined, trailing
    comments dropped."""
    blocks = {}
    pattern = re.compile(r"<!-- tested: ([\w-]+)[^>]*-->\s*```bash\n(.*?)```", re.DOTALL)
    for name, body in pattern.findall(text):
        joined = re.sub(r"\\\n\s*", "", body)
        commands = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
        blocks[name] = [command for command in commands if command]
    return blocks


def shrink(command: str) -> str:
    for readme_text, instead in SHRINK:
        command = command.replace(readme_text, instead)
    if "pipelines/train.py" in command:
        command += f" {TRAIN_SHRINK}"
    return command


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for item in sockets:
        item.bind(("127.0.0.1", 0))
    ports = [item.getsockname()[1] for item in sockets]
    for item in sockets:
        item.close()
    return ports


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh copy of the repository's tracked files (no outputs, datasets or runs)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    root = tmp_path / "repo"
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


@pytest.fixture
def shell_env(checkout: Path) -> dict[str, str]:
    """This interpreter's ``python`` and ``ray`` first on PATH, the copy's code imported, and no
    tracking URI or Ray address from the calling shell."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(checkout)
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(name, None)
    return env


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"{command!r} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


class LocalCluster:
    """The job block's ``ray start`` on 127.0.0.1 with its own temp dir and ports, stopped by
    killing its own process group (``ray start`` leaves its daemons in it)."""

    def __init__(self, readme_command: str, env: dict[str, str]) -> None:
        # Short: Ray's socket paths under it must stay within the 107-character limit.
        self.temp_dir = tempfile.mkdtemp(prefix="ray-readme-", dir="/tmp")
        gcs, dashboard, *ports = free_ports(8)
        self.dashboard_port = dashboard
        own = (
            f" --node-ip-address=127.0.0.1 --temp-dir={self.temp_dir} --port={gcs}"
            f" --dashboard-port={dashboard} --ray-client-server-port={ports[0]}"
            f" --node-manager-port={ports[1]} --object-manager-port={ports[2]}"
            f" --metrics-export-port={ports[3]} --dashboard-agent-listen-port={ports[4]}"
            f" --dashboard-agent-grpc-port={ports[5]}"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", readme_command + own],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output, _ = self.process.communicate(timeout=COMMAND_TIMEOUT_S)
        assert self.process.returncode == 0, f"ray start failed:\n{output}"

    def stop(self, grace_s: float = 5.0) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                time.sleep(0.2)
                os.killpg(self.process.pid, 0)  # raises once the whole group is gone
            os.killpg(self.process.pid, signal.SIGKILL)  # SIGTERM leaves the GCS running
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def test_the_readme_path_runs_as_written_and_the_submitted_job_trains(checkout, shell_env):
    blocks = readme_blocks(README.read_text())
    assert set(TESTED_BLOCKS) <= set(blocks), f"README lost a tested block: {sorted(blocks)}"

    quick_start = [c for c in blocks["quick-start"] if not c.startswith(SKIPPED_PREFIXES)]
    assert any("full_benchmark.py --quick" in command for command in quick_start)
    for command in quick_start:
        result = run(shrink(command), checkout, shell_env)
    assert (checkout / "outputs" / "tiny" / "results.md").is_file()
    # Ray's and Ray Data's own lines (plans, progress, the token notice) only with -v.
    assert "INFO" not in result.stderr and "Token authentication" not in result.stderr, (
        result.stderr[-3000:]
    )

    for command in blocks["training"]:
        result = run(shrink(command), checkout, shell_env)
    assert "train.py" in command  # the block ends with a training run
    assert re.search(r"^MLflow: +run \w+ in MLflow experiment 'train'", result.stdout, re.M)
    assert (checkout / "runs" / "mlflow.db").is_file()

    start, submit, *rest = blocks["job"]
    assert start.startswith("RAY_AUTH_MODE=disabled ray start --head")
    assert rest == ["ray stop"]
    # The job has an --out of its own: in the quick start's folder every run would be reused.
    job_out = re.search(r'--out "\$PWD/([^"]+)"', submit).group(1)
    assert job_out != "outputs/quick"
    cluster = LocalCluster(start, shell_env)
    try:
        submit = submit.replace(":8265", f":{cluster.dashboard_port}")
        result = run(shrink(submit), checkout, shell_env)
    finally:
        cluster.stop()
    output = result.stdout + result.stderr
    assert "succeeded" in output, output[-3000:]
    trained = re.findall(r"\[\s*\d+/\d+\] \S+ .*\(best epoch \d+, [\d.]+ s\)", output)
    assert trained and "reused" not in output, output[-3000:]
    assert (checkout / job_out / "results.md").is_file()
