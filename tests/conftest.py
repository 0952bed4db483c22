"""Shared fixtures: one local Ray cluster per test session, the real-data location, and the
logging set-up put back after every test."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

pytest_plugins = ("support.s3_server", "support.multinode")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INVLEARN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ML100K = SHARED_DATA / "ml-100k"

# Ray Train's controller collects the workers' reports on a poll every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s), and a worker's report waits for it (a one-slot
# queue): each epoch of a tiny test run waited up to 2 s. Every Ray the tests start (the
# session's, the emulated nodes, the pipelines they run) inherits this environment.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@pytest.fixture(autouse=True)
def restore_logging():
    """A command line's ``configure_logging`` sets process-wide levels and a handler: each test
    starts from, and leaves behind, the logging the session began with."""
    from invlearn_ray.cli import THIRD_PARTY_LOGGERS

    loggers = [logging.getLogger(name) for name in ("", "invlearn_ray", *THIRD_PARTY_LOGGERS)]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The MovieLens-100K folder beside the checkout; tests that need it skip without it."""
    if not (ML100K / "ml-100k.inter").is_file():
        pytest.skip(f"real data not found at {ML100K} (set INVLEARN_SHARED_DATA to its parent)")
    return ML100K


@pytest.fixture(scope="session")
def ray_session():
    """Start local Ray once for the whole session: each start costs seconds on 2 CPUs.

    With its dashboard, as the pipelines start it: the State API it serves is what Ray Train's
    placement-group cleanup needs under Tune. ``address="local"``: a fresh instance even when
    another cluster runs on this machine (a plain ``ray.init`` would join it).
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": a fresh instance even where a cluster already runs on this machine
        # (a plain ray.init joins it, and then refuses num_cpus).
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def no_tracking_env(monkeypatch):
    """Runs use their default MLflow store (under their output folder), whatever the shell says."""
    from invlearn_ray.experiments.tracking import TRACKING_ENV

    monkeypatch.delenv(TRACKING_ENV, raising=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The tiny synthetic preset, built once (in memory, no Ray) for the pipeline-level tests."""
    from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
    from invlearn_ray.data.sources import SourceSpec
    from invlearn_ray.data.splits import SplitOptions
    from invlearn_ray.data.synthetic import SyntheticConfig

    out = tmp_path_factory.mktemp("shared") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), out)
    return out
