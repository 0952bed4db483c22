"""The worker loop's pure parts: each Ray Train worker's share of its node's cores."""

from __future__ import annotations

import os

import pytest

from invlearn_ray.distributed.train_loop import intra_op_threads


@pytest.mark.parametrize(
    ("local_workers", "cores", "threads"),
    [(1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 16, 4), (3, 16, 5)],
)
def test_threads_are_the_cores_divided_among_the_node_workers(local_workers, cores, threads):
    assert intra_op_threads(local_workers, cores) == threads


def test_default_cores_are_those_this_process_may_run_on():
    assert intra_op_threads(1) == len(os.sched_getaffinity(0))
