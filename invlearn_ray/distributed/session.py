"""Joining or starting Ray: the one place every pipeline connects from."""

from __future__ import annotations

import logging
import os

import ray
from ray.data import DataContext

from invlearn_ray.cli import NORMAL, QUIET, VERBOSE

logger = logging.getLogger(__name__)


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    verbosity: int = NORMAL,
    object_store_gb: float | None = None,
) -> None:
    """Connect to Ray: keep a running session, else join ``address``, else start local Ray.

    ``object_store_gb`` caps a local Ray's shared object store (Ray's default: 30 % of the
    machine's memory). A build pins each materialized stage of the dataset there; under a cap
    Ray spills what does not fit to disk (``/tmp/ray``) and reads it back when needed, trading
    some speed for a bounded resident memory. A cluster's store is the cluster's own setting.

    Only an explicit ``address`` (or ``RAY_ADDRESS``) joins an existing cluster: on a shared
    machine, silently attaching to someone else's cluster would be worse than starting our own.
    A local Ray keeps its dashboard (on 127.0.0.1): it serves the State API that Ray Train's
    placement-group cleanup needs — without it, Tune trials stopped early by ASHA never release
    their workers and later trials hang.

    Ray's own output follows the command line's ``-q``/``-v`` (``verbosity``, see
    :func:`invlearn_ray.cli.configure_logging`): workers' and actors' output reaches this
    console only with ``-v`` (their errors still come back as exceptions, and their logs stay
    in Ray's session folder); Ray Data's progress bars show unless ``-q``.
    """
    DataContext.get_current().enable_progress_bars = verbosity > QUIET
    if ray.is_initialized():
        return
    options = {
        "log_to_driver": verbosity >= VERBOSE,
        # ray.init sets Ray's logger to this level: keep the one configure_logging chose.
        "logging_level": logging.getLogger("ray").getEffectiveLevel(),
    }
    if address or os.environ.get("RAY_ADDRESS"):
        if object_store_gb is not None:
            logger.warning(
                "--object-store-gb is ignored when joining a cluster: its object store is the "
                "cluster's own setting (ray start --object-store-memory)"
            )
        ray.init(address=address, **options)
    else:
        if object_store_gb is not None:
            options["object_store_memory"] = int(object_store_gb * 2**30)
        # address="local": a bare ray.init() joins the cluster recorded in
        # /tmp/ray/ray_current_cluster (any `ray start` on this machine, even a dead one).
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            **options,
        )
