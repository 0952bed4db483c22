"""Building datasets from a test as a user would, and comparing them wherever they are stored."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import torch

from invlearn_ray.data.recdata import RecData

REPO_ROOT = Path(__file__).resolve().parents[2]


def assert_same_data(loaded: RecData, expected: RecData) -> None:
    """Every tensor of two :class:`RecData` equal (planted truth included), and the same sizes."""
    assert (loaded.n_users, loaded.n_items) == (expected.n_users, expected.n_items)
    _assert_same(loaded, expected, "data")


def _assert_same(left, right, where: str) -> None:
    if isinstance(left, torch.Tensor):
        assert torch.equal(left, right), where
    elif dataclasses.is_dataclass(left) and not hasattr(left, "shard_files"):  # not the manifest
        for field in dataclasses.fields(left):
            _assert_same(getattr(left, field.name), getattr(right, field.name), field.name)
    elif left is None or isinstance(left, int | float | str):
        assert left == right, where


def run_build_data(
    argv: list[str], env: dict[str, str] | None = None, expect_code: int = 0, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """Run ``pipelines/build_data.py argv`` in a new process (its own Ray, or the cluster it is
    given) with ``env`` (default: this environment) and this checkout importable.

    Raises:
        AssertionError: it did not exit with ``expect_code`` (the message holds its stderr's end).
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *_pythonpath(env)])
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "build_data.py"), *argv],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == expect_code, (
        f"build_data.py {argv} exited {result.returncode}:\n{result.stderr[-4000:]}"
    )
    return result


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]
