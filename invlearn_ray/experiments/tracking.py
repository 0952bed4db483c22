"""MLflow tracking: where runs go, one experiment per study, and what every run records.

* **Where**: ``MLFLOW_TRACKING_URI`` wins (e.g. a shared ``mlflow server``); otherwise a SQLite
  file under the output folder, always as an *absolute* URI — Tune trials and Ray tasks run in
  other working directories, where a relative URI would open another database (ray_notes.md).
* **Experiments** are created here, in the driver, with an absolute artifact location under
  the output folder (created anywhere else, artifacts land in Ray's session folders).
* **One writer**: only the driver process writes (the Tune callback and the benchmark's
  result loop run there), so concurrent trials never contend for the SQLite file.
* **Every run** carries params (the full ``TrainConfig``), metrics per epoch (``step`` =
  epoch), final test metrics (``test/...``) where the protocol scores test, tags (dataset,
  method, backbone, seed, git commit, role) and its output folder as artifacts.

MLflow keys cannot hold ``@``: metric dicts here are already keyed by
:func:`invlearn_ray.evaluation.metrics.metric_key` names (``ndcg_at_10``). The keys also name the
full-ranking protocol (``test/full_recall_at_20`` for every test user,
``test/sampled_users_recall_at_20`` for a seeded user sample), and the tag
``full_ranking_protocol`` spells it out (:func:`ranking_protocol_tags`).
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from invlearn_ray import storage
from invlearn_ray.training.config import TrainConfig

TRACKING_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
REPO_ROOT = Path(__file__).resolve().parents[2]

# MLflow's log_batch limits per call.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_MAX_TAG_CHARS = 5000


def resolve_tracking_uri(output_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:////<abs output_dir>/mlflow.db``."""
    from_env = os.environ.get(TRACKING_ENV)
    if from_env:
        return from_env
    path = (Path(output_dir).resolve() / TRACKING_DB).as_posix()
    return f"sqlite:///{path}"


def is_local_store(tracking_uri: str) -> bool:
    """True for a SQLite/file store on this machine (its artifacts go under the output dir)."""
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


COMMIT_ENV = "INVLEARN_GIT_COMMIT"
"""Set it when submitting a job (README, "Running on a cluster"): ``ray job submit
--working-dir .`` does not upload ``.git``, so a job cannot read its commit otherwise."""


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ; ``unknown`` outside git.

    ``$INVLEARN_GIT_COMMIT`` wins when set (:data:`COMMIT_ENV`: captured where the job was
    submitted).
    """
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if status else commit


def config_params(config: TrainConfig | Mapping[str, Any]) -> dict[str, str]:
    """A run's params: every ``TrainConfig`` field as MLflow's string values."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {key: str(value) for key, value in sorted(values.items())}


def run_tags(
    config: TrainConfig | Mapping[str, Any], dataset: str, commit: str, **extra: Any
) -> dict[str, str]:
    """The tags every training run carries (plus ``extra``, e.g. role, study, trial id)."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    tags = {
        "dataset": dataset,
        "method": str(values["method"]),
        "backbone": str(values["backbone"]),
        "seed": str(values["seed"]),
        "git_commit": commit,
    }
    tags.update({key: str(value) for key, value in extra.items() if value is not None})
    return tags


def ranking_protocol_tags(test: Mapping[str, Any]) -> dict[str, str]:
    """The ``full_ranking_protocol`` tag of a run's test metrics: ``exact (N users)`` or
    ``sampled_users (n of N users, seed s)``; no tag when the run has no full ranking."""
    if "full_users" in test:
        return {"full_ranking_protocol": f"exact ({int(test['full_users'])} users)"}
    if "sampled_users_count" in test:
        count, population = test["sampled_users_count"], test["sampled_users_population"]
        seed = test["sampled_users_seed"]
        return {
            "full_ranking_protocol": (
                f"sampled_users ({int(count)} of {int(population)} users, seed {int(seed)})"
            )
        }
    return {}


def finite_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric entries as floats; NaN is kept (an undefined metric), infinities and
    non-numbers are dropped (MLflow would store ±inf as ±1.8e308)."""
    kept = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isinf(value):
            continue
        kept[f"{prefix}{key}"] = float(value)
    return kept


class Tracker:
    """One MLflow experiment, written from the driver.

    Picklable (Tune pickles its callbacks with the experiment state): the client is created
    lazily and dropped on pickling.

    Args:
        experiment: the experiment's name (one per study / benchmark).
        output_dir: where the default SQLite store and the artifacts live.
        tracking_uri: overrides :func:`resolve_tracking_uri`.
    """

    def __init__(
        self, experiment: str, output_dir: str | Path, tracking_uri: str | None = None
    ) -> None:
        self.experiment = experiment
        self.output_dir = Path(output_dir).resolve()
        self.tracking_uri = tracking_uri or resolve_tracking_uri(self.output_dir)
        self._client = None
        self.experiment_id = self._ensure_experiment()
        self.commit = git_commit()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _ensure_experiment(self) -> str:
        if is_local_store(self.tracking_uri):
            self.output_dir.mkdir(parents=True, exist_ok=True)
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise RuntimeError(
                    f"MLflow experiment {self.experiment!r} at {self.tracking_uri} is deleted; "
                    "restore it (mlflow experiments restore) or choose another name"
                )
            return found.experiment_id
        location = None
        if is_local_store(self.tracking_uri):
            location = (self.output_dir / ARTIFACT_DIR / self.experiment).as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    # ------------------------------------------------------------------------------ runs

    def start_run(
        self,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Create a run (status RUNNING) with its tags and params; returns its id."""
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=_clip_tags(tags))
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_run(self, **tags: str) -> str | None:
        """The id of the newest run whose tags equal ``tags``, or None."""
        clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in sorted(tags.items())]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for chunk in _chunks(items, _MAX_PARAMS):
            self.client.log_batch(run_id, params=chunk)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, value) for key, value in _clip_tags(tags).items()]
        for chunk in _chunks(items, _MAX_TAGS):
            self.client.log_batch(run_id, tags=chunk)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, Any], step: int = 0, prefix: str = ""
    ) -> None:
        """Log the numeric entries of ``metrics`` (see :func:`finite_metrics`) at ``step``."""
        self.log_steps(run_id, [(step, finite_metrics(metrics, prefix))])

    def last_step(self, run_id: str, key: str) -> int:
        """The last step logged for the metric ``key`` of a run (-1: none)."""
        return max(
            (metric.step for metric in self.client.get_metric_history(run_id, key)), default=-1
        )

    def log_history(self, run_id: str, history: Sequence[Mapping[str, Any]]) -> None:
        """Per-epoch records (``EpochRecord.flat()``): one step per epoch."""
        self.log_steps(
            run_id, [(int(record["epoch"]), finite_metrics(record)) for record in history]
        )

    def log_steps(self, run_id: str, steps: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [
            Metric(key, value, stamp, step)
            for step, values in steps
            for key, value in values.items()
        ]
        for chunk in _chunks(items, _MAX_METRICS):
            self.client.log_batch(run_id, metrics=chunk)

    def log_artifacts(
        self, run_id: str, path: storage.Location, artifact_path: str | None = None
    ) -> None:
        """Copy a file or a folder — local, or in an object store — into the run's artifacts
        (under ``artifact_path``); a location that does not exist is skipped.

        A folder keeps its name (``model/...``): MLflow itself would spill its contents into
        the artifact root.
        """
        if not storage.is_local(path):
            with tempfile.TemporaryDirectory(prefix="invlearn-artifact-") as folder:
                local = Path(folder, storage.name(path))
                if storage.is_dir(path):
                    storage.copy_tree(path, local)
                elif storage.is_file(path):
                    storage.write_bytes(local, storage.read_bytes(path))
                self.log_artifacts(run_id, local, artifact_path)
            return
        path = Path(storage.absolute(path))
        if path.is_dir():
            target = path.name if artifact_path is None else f"{artifact_path}/{path.name}"
            self.client.log_artifacts(run_id, str(path), target)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(run_id, status)

    def describe(self) -> str:
        """Where to look: the URI and experiment, as printed at the end of a pipeline."""
        return (
            f"MLflow experiment {self.experiment!r} (id {self.experiment_id}) "
            f"at {self.tracking_uri}"
        )

    def describe_run(self, run_id: str) -> str:
        """Where one run is, and for a local store the command that shows it."""
        where = f"run {run_id} in {self.describe()}"
        if is_local_store(self.tracking_uri):
            where += f" (mlflow ui --backend-store-uri {self.tracking_uri})"
        return where


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _clip_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as strings, clipped to MLflow's limit (long error messages)."""
    return {key: str(value)[:_MAX_TAG_CHARS] for key, value in tags.items()}


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
