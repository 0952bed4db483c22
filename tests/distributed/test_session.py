"""Joining or starting Ray (only an explicit address joins a running cluster), and Ray's console
output following the command line's -q/-v once Ray is imported (no cluster)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("ray")

from ray.data import DataContext  # noqa: E402

from invlearn_ray.cli import NORMAL, QUIET, VERBOSE  # noqa: E402
from invlearn_ray.distributed import session  # noqa: E402
from invlearn_ray.distributed.session import (  # noqa: E402
    RAY_AUTH_NOTICE_LOGGER,
    RAY_DATA_CONSOLE_HANDLER,
    quiet_ray_console,
)


@pytest.fixture
def ray_data_console():
    """Ray Data's console handler; its level, filters and the progress switch are put back."""
    handler = next(
        h for h in logging.getLogger("ray.data").handlers if h.name == RAY_DATA_CONSOLE_HANDLER
    )
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data", RAY_AUTH_NOTICE_LOGGER)]
    saved_levels = [logger.level for logger in loggers]
    saved = handler.level, list(handler.filters), DataContext.get_current().enable_progress_bars
    yield handler
    for logger, level in zip(loggers, saved_levels, strict=True):
        logger.setLevel(level)
    handler.setLevel(saved[0])
    handler.filters[:] = saved[1]
    DataContext.get_current().enable_progress_bars = saved[2]


def _shown(handler: logging.Handler, level: int, message: str) -> bool:
    record = logging.LogRecord("ray.data.x", level, __file__, 1, message, None, None)
    return record.levelno >= handler.level and bool(handler.filter(record))


def test_ray_data_info_lines_and_the_auth_notice_stay_off_the_console_by_default(
    ray_data_console,
):
    logging.getLogger("ray").setLevel(logging.INFO)  # what importing Ray does
    quiet_ray_console(NORMAL)
    assert not _shown(ray_data_console, logging.INFO, "Starting execution of Dataset x")
    assert _shown(ray_data_console, logging.WARNING, "a real warning")
    assert not logging.getLogger("ray").isEnabledFor(logging.INFO)
    assert not logging.getLogger(RAY_AUTH_NOTICE_LOGGER).isEnabledFor(logging.WARNING)
    # Ray Data's own log file still gets every line.
    assert logging.getLogger("ray.data").isEnabledFor(logging.DEBUG)
    assert DataContext.get_current().enable_progress_bars


def test_verbose_shows_ray_datas_lines_and_the_auth_notice(ray_data_console):
    quiet_ray_console(VERBOSE)
    assert _shown(ray_data_console, logging.INFO, "Starting execution of Dataset x")
    assert logging.getLogger(RAY_AUTH_NOTICE_LOGGER).isEnabledFor(logging.WARNING)


def test_quiet_turns_progress_off_without_ray_data_warning_about_it(ray_data_console):
    quiet_ray_console(QUIET)
    assert not DataContext.get_current().enable_progress_bars
    assert not _shown(ray_data_console, logging.WARNING, "Progress bars disabled. To enable, ...")


@pytest.fixture
def ray_init_calls(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(session.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(session.ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_without_an_address_a_fresh_local_ray_starts_beside_any_running_cluster(ray_init_calls):
    # A plain ray.init(num_cpus=...) joins the cluster of /tmp/ray/ray_current_cluster (a stale
    # one too) and then refuses num_cpus: "local" always starts a new instance.
    session.ensure_ray(num_cpus=1)
    (call,) = ray_init_calls
    assert call["address"] == "local" and call["num_cpus"] == 1


def test_an_explicit_address_joins_that_cluster_without_local_resources(ray_init_calls):
    session.ensure_ray(address="127.0.0.1:6379", num_cpus=None)
    (call,) = ray_init_calls
    assert call["address"] == "127.0.0.1:6379" and "num_cpus" not in call


def test_local_cpus_with_a_cluster_address_are_a_one_line_error(ray_init_calls, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(session.RayOptionError, match="--num-cpus 2 applies to a local Ray"):
        session.ensure_ray(num_cpus=2)
    assert ray_init_calls == []


def test_a_local_folder_on_a_cluster_of_several_nodes_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(session.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(session.ray, "nodes", lambda: [{"Alive": True}] * 3)
    context = type("Context", (), {"gcs_address": "10.0.0.1:6379"})()
    monkeypatch.setattr(session.ray, "get_runtime_context", lambda: context)
    with pytest.raises(session.LocalOnClusterError, match=r"cluster \(10.0.0.1:6379\) has 3 nodes"):
        session.check_reachable_from_workers("runs/x", "--out")
    session.check_reachable_from_workers("s3://bucket/runs/x", "--out")  # every node reaches it
    monkeypatch.setattr(session.ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    session.check_reachable_from_workers("runs/x", "--out")  # one node: its disk is the disk
