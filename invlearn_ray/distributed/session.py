"""Joining or starting Ray: the one place every pipeline connects from."""

from __future__ import annotations

import os

import ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray: keep a running session, else join ``address``, else start local Ray.

    Only an explicit ``address`` (or ``RAY_ADDRESS``) joins an existing cluster: on a shared
    machine, silently attaching to someone else's cluster would be worse than starting our own.
    A local Ray keeps its dashboard (on 127.0.0.1): it serves the State API that Ray Train's
    placement-group cleanup needs — without it, Tune trials stopped early by ASHA never release
    their workers and later trials hang.
    """
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1")
