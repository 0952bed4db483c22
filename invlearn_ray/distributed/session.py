"""Joining or starting Ray: the one place every pipeline connects from."""

from __future__ import annotations

import logging
import os

import ray
from ray.data import DataContext

from invlearn_ray import storage
from invlearn_ray.cli import NORMAL, QUIET, VERBOSE, set_third_party_levels
from invlearn_ray.errors import UserError

logger = logging.getLogger(__name__)

RAY_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Ray warns on every new local instance that it turned token authentication on (its default,
which stays on); the notice is shown only with ``-v``. (Choosing the mode with ``RAY_AUTH_MODE``
instead would have to happen before ``ray`` is imported: Ray caches its config at import.)"""
RAY_DATA_CONSOLE_HANDLER = "console"
"""The name Ray Data gives the handler that copies its ``ray.data`` log lines to stderr."""


class RayOptionError(ValueError, UserError):
    """An option that cannot apply to the Ray this command connects to."""


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

    Only an explicit ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) joins an
    existing cluster: on a shared machine, silently attaching to someone else's cluster would be
    worse than starting our own. So without one, a fresh local Ray starts beside any cluster
    already running (``address="local"``): a plain ``ray.init()`` would join the cluster named
    by ``/tmp/ray/ray_current_cluster`` — a stale one too — and then refuse ``num_cpus``.
    A local Ray keeps its dashboard (on 127.0.0.1): it serves the State API that Ray Train's
    placement-group cleanup needs — without it, Tune trials stopped early by ASHA never release
    their workers and later trials hang.

    Ray's own output follows the command line's ``-q``/``-v`` (``verbosity``, see
    :func:`invlearn_ray.cli.configure_logging`): workers' and actors' output reaches this
    console only with ``-v`` (their errors still come back as exceptions, and their logs stay
    in Ray's session folder); Ray Data's own lines and Ray's token-authentication notice only
    with ``-v`` (:func:`quiet_ray_console`); Ray Data's progress bars on a terminal unless
    ``-q``.
    """
    quiet_ray_console(verbosity)
    if ray.is_initialized():
        return
    options = {
        "log_to_driver": verbosity >= VERBOSE,
        "logging_level": logging.INFO if verbosity >= VERBOSE else logging.WARNING,
    }
    if address or os.environ.get("RAY_ADDRESS"):
        if num_cpus is not None:
            raise RayOptionError(
                f"--num-cpus {num_cpus} applies to a local Ray this command starts; the cluster "
                f"at {address or os.environ['RAY_ADDRESS']} has its own CPUs (set with ray start "
                "--num-cpus). Drop --num-cpus, or drop the address to start a local Ray"
            )
        if object_store_gb is not None:
            logger.warning(
                "--object-store-gb is ignored when joining a cluster: its object store is the "
                "cluster's own setting (ray start --object-store-memory)"
            )
        ray.init(address=address, **options)
    else:
        if object_store_gb is not None:
            options["object_store_memory"] = int(object_store_gb * 2**30)
        # "local": a fresh instance even where another local cluster runs (a plain ray.init()
        # would join the newest one through /tmp/ray, see the docstring).
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            **options,
        )


def quiet_ray_console(verbosity: int) -> None:
    """Ray's and Ray Data's console output at the command line's verbosity.

    Importing ``ray`` resets the ``ray`` logger's level and importing ``ray.data`` gives
    ``ray.data`` its own console handler at INFO (its plans, "Starting execution", "Data sink
    Parquet finished", ...), whatever :func:`invlearn_ray.cli.configure_logging` chose before;
    this sets them again, and hides Ray's token-authentication notice. Without ``-v`` Ray
    Data's console handler shows warnings only, while its log file in Ray's session folder
    (``logs/ray-data``) keeps every line. Ray Data's progress bars are on unless ``-q``: on a
    terminal they are bars, elsewhere Ray Data logs them as INFO lines (the log file's only).
    """
    set_third_party_levels(verbosity)
    logging.getLogger(RAY_AUTH_NOTICE_LOGGER).setLevel(
        logging.NOTSET if verbosity >= VERBOSE else logging.ERROR
    )
    data_logger = logging.getLogger("ray.data")
    data_logger.setLevel(logging.DEBUG)  # Ray Data's own level: its log file keeps every line
    for handler in data_logger.handlers:
        if handler.name == RAY_DATA_CONSOLE_HANDLER:
            handler.setLevel(logging.INFO if verbosity >= VERBOSE else logging.WARNING)
            if not any(isinstance(f, _ProgressOffNotice) for f in handler.filters):
                handler.addFilter(_ProgressOffNotice())
    DataContext.get_current().enable_progress_bars = verbosity > QUIET


class _ProgressOffNotice(logging.Filter):
    """Drops Ray Data's warning that its progress bars are off: ``-q`` turned them off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


class LocalOnClusterError(ValueError, UserError):
    """A local folder given where every node of a multi-node cluster must reach the files."""


def check_reachable_from_workers(
    location: str, option: str = "--out", hint: str | None = None
) -> None:
    """Refuse a local ``location`` on a Ray cluster of more than one node.

    Each node's disk is its own: files written by tasks or workers on other nodes would land
    there, out of the driver's (and every later reader's) sight.

    Args:
        hint: what to do instead (default: give ``option`` an object-store URI).

    Raises:
        LocalOnClusterError: ``location`` is local and more than one node is alive.
    """
    if not storage.is_local(location) or not ray.is_initialized():
        return
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1:
        hint = hint or (
            f"Give {option} a location every node reaches, e.g. s3://bucket/path (see README, "
            "Running on a cluster)."
        )
        address = ray.get_runtime_context().gcs_address
        raise LocalOnClusterError(
            f"{location}: a local folder, but this Ray cluster ({address}) has {len(nodes)} "
            f"nodes and each writes to its own disk. {hint}"
        )
