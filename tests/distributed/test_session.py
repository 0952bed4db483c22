"""Joining or starting Ray: only an explicit address joins a running cluster."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from invlearn_ray.distributed import session  # noqa: E402


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
