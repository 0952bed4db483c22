"""The full benchmark: datasets × backbones × methods × seeds, tuned or given, tracked, reported.

A :class:`Profile` names everything a benchmark does; ``pipelines/full_benchmark.py`` only
picks one and overrides parts of it. :func:`run_benchmark` then

1. **builds** each dataset with Ray Data (synthetic presets, ML-100K's pre-split files, any
   source at a ``label_fraction``) or takes a built folder by path; a folder already holding
   the same build is reused;
2. **configures** each table row (an *entry*: a method, or ``best_explicit`` — whichever
   explicit-negative loss tunes best): ``TrainConfig`` defaults < the profile's ``train``
   settings < a ``--configs`` file < ``--set`` < tuning. Tuned profiles run one Ray Tune study
   per (dataset, backbone, entry) with the *same budget for every method*, selecting on
   validation only; a finished study is never re-run;
3. **trains** every row for seeds ``0..n-1`` (plus IG at other α/γ for the Figure 7 study)
   through :func:`~invlearn_ray.experiments.runs.execute_runs`: Ray tasks, one progress line
   per run, one MLflow run per run nested under the benchmark's summary run; a failed run is
   recorded with its error, and shows in the table;
4. **reports**: ``results.csv`` / ``results.md`` (paper Tables 1–2 shape), ``runs.csv``,
   ``annotation.md`` and the figures, all logged to the summary run.

Issue 6's sweep is the ``sparse-sweep`` profile: label fractions are just more datasets.

A room per job:

* :mod:`.entries` — the table's rows (every method, plus ``best_explicit``) and their names;
* :mod:`invlearn_ray.experiments.datasets` — :class:`DatasetSpec`, building or reusing a dataset;
* :mod:`.given` — ``--configs`` files;
* :mod:`.profiles` — :class:`Profile` and the named :data:`PROFILES`;
* :mod:`.grid` — the cells and the precedence of their settings (pure), the runs they plan;
* :mod:`.tuning` — one study per cell;
* :mod:`.summary`, :mod:`.tables`, :mod:`.figures`, :mod:`.report` — aggregation over seeds,
  the CSV/Markdown tables, the figures, and what a finished benchmark writes;
* :mod:`.run` — :func:`run_benchmark`, all of it in order.

Output folder::

    <out>/datasets/<name>/          built datasets (reused when the build is the same)
    <out>/studies/<dataset>/<backbone>/<entry>/   Tune studies (tuned profiles)
    <out>/runs/<dataset>/<backbone>/<entry>/seed<k>/   each run's model, metrics, outcome
    <out>/results.csv, results.md, runs.csv, annotation.md, figures/*.png
    <out>/mlflow.db, mlartifacts/   the default MLflow store (MLFLOW_TRACKING_URI wins)
"""

from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT, ENTRIES
from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError, BenchmarkInterrupted
from invlearn_ray.experiments.benchmark.given import GivenConfigs, load_given_configs
from invlearn_ray.experiments.benchmark.grid import check_overrides
from invlearn_ray.experiments.benchmark.profiles import PROFILES, Profile, get_profile
from invlearn_ray.experiments.benchmark.run import BenchmarkResult, run_benchmark
from invlearn_ray.experiments.datasets import DatasetSpec, ensure_dataset, parse_dataset

__all__ = [
    "BEST_EXPLICIT",
    "ENTRIES",
    "PROFILES",
    "BenchmarkConfigError",
    "BenchmarkInterrupted",
    "BenchmarkResult",
    "DatasetSpec",
    "GivenConfigs",
    "Profile",
    "check_overrides",
    "ensure_dataset",
    "get_profile",
    "load_given_configs",
    "parse_dataset",
    "run_benchmark",
]
