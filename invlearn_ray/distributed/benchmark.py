"""The full benchmark: datasets × backbones × methods × seeds, tuned or given, tracked, reported.

A :class:`Profile` names everything a benchmark does; ``pipelines/full_benchmark.py`` only
picks one and overrides parts of it. :func:`run_benchmark` then

1. **builds** each dataset with Ray Data (synthetic presets, ML-100K's pre-split files, any
   source at a ``label_fraction``) or takes a built folder by path; a folder already holding
   the same build is reused;
2. **configures** each table row (an *entry*: a method, or ``best_explicit`` — whichever
   explicit-negative loss tunes best): ``TrainConfig`` defaults < the profile's ``train``
   settings < a ``--configs`` file < tuning. Tuned profiles run one Ray Tune study per
   (dataset, backbone, entry) with the *same budget for every method*, selecting on
   validation only; a finished study is never re-run;
3. **trains** every row for seeds ``0..n-1`` (plus IG at other α/γ for the Figure 7 study)
   through :func:`~invlearn_ray.distributed.runs.execute_runs`: Ray tasks, one progress line
   per run, one MLflow run per run nested under the benchmark's summary run; a failed run is
   recorded with its error, and shows in the table;
4. **reports**: ``results.csv`` / ``results.md`` (paper Tables 1–2 shape), ``runs.csv``,
   ``annotation.md`` and the figures (:mod:`~invlearn_ray.distributed.report`), all logged to
   the summary run.

Issue 6's sweep is the ``sparse-sweep`` profile: label fractions are just more datasets.

Output folder::

    <out>/datasets/<name>/          built datasets (reused when the build is the same)
    <out>/studies/<dataset>/<backbone>/<entry>/   Tune studies (tuned profiles)
    <out>/runs/<dataset>/<backbone>/<entry>/seed<k>/   each run's model, metrics, outcome
    <out>/results.csv, results.md, runs.csv, annotation.md, figures/*.png
    <out>/mlflow.db, mlartifacts/   the default MLflow store (MLFLOW_TRACKING_URI wins)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invlearn_ray.config_io import (
    ConfigFileError,
    KeyPath,
    Locator,
    check_field_value,
    load_yaml_with_lines,
)
from invlearn_ray.core.backbones import BACKBONES
from invlearn_ray.core.config import TrainConfig
from invlearn_ray.core.methods import METHOD_SPECS, METHODS
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import PRESETS, SyntheticConfig
from invlearn_ray.distributed import report
from invlearn_ray.distributed.build import build_dataset
from invlearn_ray.distributed.runs import RunOutcome, RunSpec, execute_runs
from invlearn_ray.distributed.spaces import StudySpace, load_space
from invlearn_ray.distributed.tracking import Tracker
from invlearn_ray.distributed.tune import StudyBudget, run_study
from invlearn_ray.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACES_DIR = REPO_ROOT / "tune_spaces"
SHARED_DATA = Path(os.environ.get("INVLEARN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ML100K_SPLIT = SHARED_DATA / "ml-100k" / "split"

BEST_EXPLICIT = "best_explicit"
ENTRIES = (*METHODS, BEST_EXPLICIT)
"""Table rows: every method, plus the explicit-negative loss that tunes best."""
ENTRY_SPACES = {
    **{name: spec.space_file for name, spec in METHOD_SPECS.items()},
    BEST_EXPLICIT: "explicit_negative.yaml",
}
"""The space that tunes each entry (the explicit-negative one is pinned to a single loss,
except for ``best_explicit``, where the study also picks the loss)."""
UNTUNED_BEST_EXPLICIT = "sl_complement"
"""``best_explicit`` without tuning: the complement likelihood, the stable alternative to
negating the gradient (seed 002)."""


class BenchmarkConfigError(ValueError, UserError):
    """A profile, dataset or configs-file option is invalid; the message says where."""


class BenchmarkInterrupted(RuntimeError):
    """A tuning study was interrupted (Ctrl-C); running the benchmark again resumes it."""


# ------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the benchmark.

    Attributes:
        source: ``synthetic`` (a generator preset), ``ml100k`` (the pre-split ML-100K files)
            or ``path`` (a dataset folder built before).
        preset: the synthetic preset.
        path: the built folder (``path``) or the ML-100K split folder (``ml100k``).
        label_fraction: share of labeled training rows kept labeled (issue 6).
        seed: the build's seed (splits, label fraction, sampling).
    """

    source: str
    preset: str = "default"
    path: str | None = None
    label_fraction: float = 1.0
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "ml100k", "path"):
            raise BenchmarkConfigError(f"unknown dataset source {self.source!r}")
        if self.source == "synthetic" and self.preset not in PRESETS:
            raise BenchmarkConfigError(
                f"unknown synthetic preset {self.preset!r}; valid: {sorted(PRESETS)}"
            )
        if not 0 < self.label_fraction <= 1:
            raise BenchmarkConfigError(f"label_fraction must be in (0, 1]: {self.label_fraction}")
        if self.source == "path" and self.label_fraction != 1:
            raise BenchmarkConfigError(
                f"{self.path}: a dataset given by path is already built; its label fraction "
                "cannot change (build it with pipelines/build_data.py --label-fraction)"
            )

    @property
    def base_name(self) -> str:
        if self.source == "synthetic":
            return "synthetic" if self.preset == "default" else f"synthetic-{self.preset}"
        if self.source == "ml100k":
            return "ml100k"
        return Path(self.path or "dataset").name

    @property
    def name(self) -> str:
        """The name tables show: ``synthetic``, ``ml100k@lf0.3``, a folder's name."""
        if self.label_fraction == 1:
            return self.base_name
        return f"{self.base_name}@lf{self.label_fraction:g}"

    def build_config(self) -> BuildConfig | None:
        """What to build (None for a dataset given by path)."""
        split = SplitOptions(seed=self.seed, label_fraction=self.label_fraction)
        if self.source == "synthetic":
            source = SourceSpec.from_synthetic(
                SyntheticConfig.preset(self.preset), name=self.base_name
            )
        elif self.source == "ml100k":
            folder = Path(self.path) if self.path else ML100K_SPLIT
            source = SourceSpec.presplit(folder, "ml100k")
        else:
            return None
        return BuildConfig(source=source, split=split, name=self.name)

    def check(self) -> None:
        """What can be checked without Ray: a built folder is verified against its manifest,
        a source's files exist.

        Raises:
            DataError: a missing or changed dataset folder, or missing source files.
        """
        if self.source == "path":
            dd.verified_manifest(Path(self.path))
        else:
            self.build_config()

    def with_label_fraction(self, fraction: float) -> DatasetSpec:
        return dataclasses.replace(self, label_fraction=fraction)


def parse_dataset(text: str) -> DatasetSpec:
    """``synthetic``, ``synthetic:tiny``, ``ml100k``, ``ml100k:/path/to/split`` or a built
    dataset folder.

    Raises:
        BenchmarkConfigError: an unknown name, or a path that holds no built dataset.
    """
    kind, _, argument = text.partition(":")
    if kind == "synthetic":
        return DatasetSpec("synthetic", preset=argument or "default")
    if kind == "ml100k":
        return DatasetSpec("ml100k", path=argument or None)
    path = Path(text)
    if (path / dd.MANIFEST_FILE).is_file():
        return DatasetSpec("path", path=str(path.resolve()))
    raise BenchmarkConfigError(
        f"dataset {text!r}: not 'synthetic[:preset]', 'ml100k[:split folder]' or a built "
        f"dataset folder (no {dd.MANIFEST_FILE} at {path.resolve()}); build one with "
        "pipelines/build_data.py"
    )


def ensure_dataset(
    spec: DatasetSpec, root: Path, engine: str = "ray", progress: Callable[[str], None] = print
) -> Path:
    """The dataset's folder: built under ``root`` (Ray Data, or in memory), or reused when a
    previous benchmark built exactly the same thing there."""
    config = spec.build_config()
    if config is None:
        return Path(spec.path).resolve()
    out = (root / spec.name).resolve()
    wanted = json.loads(json.dumps(config.inputs()))
    if _built_from(out) == wanted:
        progress(f"dataset {spec.name}: reusing {out}")
        return out
    started = time.perf_counter()
    if engine == "ray":
        manifest = build_dataset(config, out, overwrite=True)
    else:
        manifest = build_dataset_in_memory(config, out, overwrite=True)
    counts = ", ".join(f"{split} {manifest.rows(split)}" for split in manifest.counts)
    progress(
        f"dataset {spec.name}: built with {engine} in {time.perf_counter() - started:.1f} s "
        f"({counts}) -> {out}"
    )
    return out


def _built_from(out: Path) -> dict[str, Any] | None:
    """The inputs of the dataset built in ``out``; None when there is none this code reads
    (an older schema is rebuilt) or its files changed since the build."""
    try:
        return dd.verified_manifest(out).inputs
    except DatasetFormatError:
        return None


# ------------------------------------------------------------------------------------------
# Given configurations (--configs)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GivenConfigs:
    """``TrainConfig`` overrides by scope: ``all``, an entry (``ig``) or ``backbone/entry``.

    File format (YAML)::

        all: {epochs: 10}            # every run
        ig: {dual_lr_ratio: 1.0}     # every IG run
        neumf/ig: {lr: 1.0e-3}       # IG on NeuMF only
    """

    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_run(self, entry: str, backbone: str) -> dict[str, Any]:
        """The merged overrides of a run (narrower scopes win)."""
        merged: dict[str, Any] = {}
        for scope in ("all", entry, f"{backbone}/{entry}"):
            merged.update(self.scopes.get(scope, {}))
        return merged


def load_given_configs(path: str | Path) -> GivenConfigs:
    """Read and validate a ``--configs`` file.

    Raises:
        BenchmarkConfigError: unknown scope, field or value, with file, line and key.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkConfigError(f"{path}: no such configs file")
    try:
        values, lines = load_yaml_with_lines(path.read_text(), str(path))
    except ConfigFileError as error:
        raise BenchmarkConfigError(str(error)) from None
    return parse_given_configs(values, str(path), lines)


def parse_given_configs(
    values: Any, source: str = "<configs>", lines: dict[KeyPath, int] | None = None
) -> GivenConfigs:
    """Validate given configurations held as plain data (see :func:`load_given_configs`)."""
    fail = Locator(source, lines or {}, BenchmarkConfigError).error

    if values is None:
        return GivenConfigs()
    if not isinstance(values, dict):
        raise BenchmarkConfigError(f"{source}: a configs file holds a mapping of scopes")
    valid_scopes = ["all", *ENTRIES, *(f"{b}/{e}" for b in BACKBONES for e in ENTRIES)]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    scopes = {}
    for scope, overrides in values.items():
        if scope not in valid_scopes:
            raise fail(
                (scope,),
                f"unknown scope; use 'all', an entry {list(ENTRIES)} or 'backbone/entry' "
                f"with a backbone from {sorted(BACKBONES)}",
            )
        if not isinstance(overrides, dict):
            raise fail((scope,), "must map TrainConfig fields to values")
        checked = {}
        for name, value in overrides.items():
            if name not in fields:
                raise fail((scope, name), f"not a TrainConfig field; valid: {sorted(fields)}")
            if name in ("seed", "backbone") or (name == "method" and scope != BEST_EXPLICIT):
                raise fail(
                    (scope, name),
                    f"{name} is set by the benchmark grid (--seeds, --backbones, --methods)",
                )
            try:
                checked[name] = check_field_value(name, value)
            except ValueError as error:
                raise fail((scope, name), f"TrainConfig.{name} {error}") from None
        scopes[scope] = checked
    return GivenConfigs(scopes)


# ------------------------------------------------------------------------------------------
# Profiles
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Everything one benchmark does.

    Attributes:
        name: the profile's name (``quick``, ...).
        description: one line for ``--help`` and the report.
        datasets: what to build or load.
        backbones: backbones (table sections).
        entries: methods (table rows), from :data:`ENTRIES`.
        seeds: every row runs seeds ``0..seeds-1``.
        train: ``TrainConfig`` settings of every run (epochs, batch size, ...).
        ratio_study: IG α/γ values run besides the IG row's own (paper Figure 7).
        label_fractions: each dataset is built once per fraction (issue 6's sweep).
        tune: the study budget of every (dataset, backbone, entry); None = no tuning.
    """

    name: str
    description: str
    datasets: tuple[DatasetSpec, ...]
    backbones: tuple[str, ...]
    entries: tuple[str, ...]
    seeds: int
    train: dict[str, Any] = field(default_factory=dict)
    ratio_study: tuple[float, ...] = ()
    label_fractions: tuple[float, ...] = (1.0,)
    tune: StudyBudget | None = None

    def __post_init__(self) -> None:
        unknown = [entry for entry in self.entries if entry not in ENTRIES]
        if unknown:
            raise BenchmarkConfigError(f"unknown method(s) {unknown}; valid: {list(ENTRIES)}")
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown:
            raise BenchmarkConfigError(f"unknown backbone(s) {unknown}; valid: {sorted(BACKBONES)}")
        if self.seeds < 1:
            raise BenchmarkConfigError(f"seeds must be >= 1, got {self.seeds}")
        if not self.datasets or not self.backbones or not self.entries:
            raise BenchmarkConfigError("a profile needs datasets, backbones and methods")
        if not self.label_fractions:
            raise BenchmarkConfigError("a profile needs at least one label fraction (1 = all)")
        for fraction in self.label_fractions:
            if not 0 < fraction <= 1:
                raise BenchmarkConfigError(
                    f"label fraction {fraction:g} is not in (0, 1]: it is the share of labeled "
                    "training rows kept labeled (1 = all, 0.1 = a tenth)"
                )
        try:
            TrainConfig.from_dict(self.train)
        except ValueError as error:
            raise BenchmarkConfigError(f"profile {self.name!r}: train settings: {error}") from None

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)


# The quick profile's training settings: measured on the default synthetic preset on this 2-core
# machine, 6 epochs at batch 256 and lr 5e-3 reach the plateau the 12-epoch runs reach for the
# NS family (test AUC ~0.64) while keeping a GMF run at 1-8 s (IG is the slowest).
QUICK_TRAIN = {"epochs": 6, "batch_size": 256, "test_batch_size": 256, "lr": 5e-3}

# The paper-scale profile's training settings (issue 10), sized to the 2-hour budget rather than
# tuned: the micro_video preset at full size has ~5.1 M training-train rows. Measured per epoch on
# its shape at 0.4 M clear rows, one thread, scaled to 9.46 M: at batch 4096 None ~26 s, NS ~70 s,
# IDL ~110 s, IG ~85 s (at batch 1024 IG takes ~300 s), plus ~30 s of full-catalogue test ranking
# per run. Twelve runs, two at a time, of 5 epochs: ~45 min, and the batch keeps Adam's ~6 k steps
# per run at the quick profile's learning rate.
PAPER_SCALE_TRAIN = {"epochs": 5, "batch_size": 4096, "test_batch_size": 4096, "lr": 5e-3}

PROFILES = {
    "tiny": Profile(
        name="tiny",
        description="seconds: tiny synthetic data, 6 methods x GMF x 2 seeds, 2 epochs (tests, CI)",
        datasets=(DatasetSpec("synthetic", preset="tiny"),),
        backbones=("gmf",),
        entries=("none", "ns", "idl", "ig", "bsl", "sl_complement"),
        seeds=2,
        train={"epochs": 2, "batch_size": 64, "test_batch_size": 64, "embedding_dim": 8},
        ratio_study=(10.0,),
    ),
    "quick": Profile(
        name="quick",
        description="minutes: synthetic default, every method x GMF x 3 seeds, given configs, "
        "alpha/gamma study; the README's main job",
        datasets=(DatasetSpec("synthetic"),),
        backbones=("gmf",),
        entries=METHODS,
        seeds=3,
        train=QUICK_TRAIN,
        ratio_study=(1.0, 10.0, 50.0, 100.0),
    ),
    "paper-scale": Profile(
        name="paper-scale",
        description="under 2 h: micro_video at the paper's full size (9.46 M clear rows), "
        "None, NS, IDL, IG x GMF x 3 seeds, 5 epochs at batch 4096; no alpha/gamma study",
        datasets=(DatasetSpec("synthetic", preset="micro_video"),),
        backbones=("gmf",),
        entries=("none", "ns", "idl", "ig"),
        seeds=3,
        train=PAPER_SCALE_TRAIN,
    ),
    "standard": Profile(
        name="standard",
        description="hours: synthetic + ML-100K split, every method x GMF/NeuMF x 3 seeds, "
        "each tuned with the same Tune budget (8 trials, ASHA)",
        datasets=(DatasetSpec("synthetic"), DatasetSpec("ml100k")),
        backbones=("gmf", "neumf"),
        entries=METHODS,
        seeds=3,
        train={"epochs": 30, "patience": 5},
        ratio_study=(1.0, 10.0, 50.0, 100.0),
        tune=StudyBudget(trials=8, concurrency=2),
    ),
    "sparse-sweep": Profile(
        name="sparse-sweep",
        description="issues 6, 13: label fractions 100/30/10/3% x GMF/NeuMF/biased MF x "
        "Popularity, None, None at IG's steps, watched = positive, NS, T-CE, R-CE, IDL, IG, BSL, "
        "best explicit-negative loss x 3 seeds, each tuned with the same 16-trial budget",
        datasets=(DatasetSpec("synthetic"), DatasetSpec("ml100k")),
        backbones=("gmf", "neumf", "biased_mf"),
        entries=(
            "popularity",
            "none",
            "none_ig_steps",
            "watched_positive",
            "ns",
            "tce",
            "rce",
            "idl",
            "ig",
            "bsl",
            BEST_EXPLICIT,
        ),
        seeds=3,
        train={"epochs": 30, "patience": 5},
        label_fractions=(1.0, 0.3, 0.1, 0.03),
        tune=StudyBudget(trials=16, concurrency=2),
    ),
}
"""The named profiles (``--profile``)."""


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise BenchmarkConfigError(f"unknown profile {name!r}; valid: {sorted(PROFILES)}")
    return PROFILES[name]


# ------------------------------------------------------------------------------------------
# Configuring and running
# ------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """What a benchmark produced and where."""

    output_dir: Path
    outcomes: list[RunOutcome]
    rows: list[report.SummaryRow]
    files: list[Path]
    tracking: str
    summary_run_id: str
    seconds: float

    @property
    def failed(self) -> list[RunOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


GRID_FIELDS = {"seed": "--seeds", "backbone": "--backbones", "method": "--methods"}
"""``TrainConfig`` fields the grid sets for each run; a value for every run would be ignored."""


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Refuse ``--set`` values of fields the grid sets (they used to be silently ignored).

    Raises:
        BenchmarkConfigError: ``overrides`` names a field of :data:`GRID_FIELDS`.
    """
    for name, option in GRID_FIELDS.items():
        if name in overrides:
            raise BenchmarkConfigError(
                f"--set {name}={overrides[name]!r}: {name} is set by the benchmark grid; "
                f"use {option}"
            )


def entry_method(entry: str, overrides: Mapping[str, Any]) -> str:
    """The method a row trains: the entry itself, or for ``best_explicit`` the given/tuned loss."""
    if entry != BEST_EXPLICIT:
        return entry
    return overrides.get("method", UNTUNED_BEST_EXPLICIT)


def runs_on(entry: str, dataset_path: Path) -> bool:
    """Whether the row can train on the dataset: a method that learns from observed-unlabeled
    rows whatever the source (``watched_positive``) has nothing to learn from on one without
    them (e.g. ML-100K with every label), so its row is left out there, with a note."""
    spec = METHOD_SPECS.get(entry)
    return not (spec and spec.observed_rows and Manifest.read(dataset_path).rows("unclear") == 0)


def study_pins(
    profile: Profile,
    entry: str,
    backbone: str,
    space: StudySpace,
    given: Mapping[str, Any],
    dataset_path: Path,
) -> dict[str, Any]:
    """The fields a row's study fixes: profile settings the space does not search, given
    settings (even searched ones: the user narrowed the study on purpose), the row itself.

    On a dataset without observed-unlabeled rows the unlabeled source is pinned to ``sampled``:
    ``observed`` cannot train there and ``both`` would equal ``sampled``, so trials spent on
    them would be wasted budget that the other methods' studies do not lose.
    """
    pins = {key: value for key, value in profile.train.items() if key not in space.search}
    pins.update(given)
    pins["backbone"] = backbone
    if entry != BEST_EXPLICIT:
        pins["method"] = entry
    if "unlabeled_source" in space.search and "unlabeled_source" not in given:
        if Manifest.read(dataset_path).rows("unclear") == 0:
            pins["unlabeled_source"] = "sampled"
    return pins


def tune_entry(
    profile: Profile,
    entry: str,
    backbone: str,
    dataset_name: str,
    dataset_path: Path,
    given: Mapping[str, Any],
    out: Path,
    experiment: str,
    spaces_dir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run (or reuse) the study of one row (fields pinned by :func:`study_pins`); returns its
    best configuration."""
    space = load_space(spaces_dir / ENTRY_SPACES[entry])
    space = space.pinned(**study_pins(profile, entry, backbone, space, given, dataset_path))
    study_dir = out / "studies" / dataset_name / backbone / entry
    progress(
        f"tuning {dataset_name}/{backbone}/{entry}: {profile.tune.trials} trials -> {study_dir}"
    )
    result = run_study(
        space,
        dataset_path,
        profile.tune,
        study_dir,
        name=f"{dataset_name}/{backbone}/{entry}",
        tracker=Tracker(f"{experiment} study {dataset_name} {backbone} {entry}", out),
        score_best=False,
        verbose=0,
    )
    if not result.complete:
        raise BenchmarkInterrupted(
            f"study {study_dir} was interrupted; run the same command again to resume it"
        )
    progress(
        f"tuned {dataset_name}/{backbone}/{entry}: best {space.metric} {result.best_valid:.4f} "
        f"(trial {result.best_trial_id}, {result.failed_trials} failed trials)"
    )
    return dict(result.best_config)


def plan_runs(
    profile: Profile,
    datasets: Mapping[str, tuple[DatasetSpec, Path]],
    configs: Mapping[tuple[str, str, str], dict[str, Any]],
    out: Path,
) -> list[RunSpec]:
    """Every run of the benchmark: rows × seeds, then the α/γ study's IG runs."""
    specs = []
    for dataset_name, (dataset_spec, path) in datasets.items():
        for backbone in profile.backbones:
            for entry in profile.entries:
                if (dataset_name, backbone, entry) not in configs:
                    continue  # left out: see runs_on
                values = configs[(dataset_name, backbone, entry)]
                for seed in range(profile.seeds):
                    config = TrainConfig.from_dict({**values, "seed": seed})
                    specs.append(_spec(dataset_spec, dataset_name, path, entry, config, out))
                if entry != "ig":
                    continue
                for ratio in profile.ratio_study:
                    if math.isclose(ratio, values.get("dual_lr_ratio", TrainConfig.dual_lr_ratio)):
                        continue
                    for seed in range(profile.seeds):
                        config = TrainConfig.from_dict(
                            {**values, "seed": seed, "dual_lr_ratio": ratio}
                        )
                        specs.append(
                            _spec(
                                dataset_spec,
                                dataset_name,
                                path,
                                entry,
                                config,
                                out,
                                group=report.GROUP_RATIO,
                            )
                        )
    return specs


def _spec(
    dataset: DatasetSpec,
    dataset_name: str,
    path: Path,
    entry: str,
    config: TrainConfig,
    out: Path,
    group: str = report.GROUP_MAIN,
) -> RunSpec:
    row = entry if group == report.GROUP_MAIN else f"{entry}@ratio{config.dual_lr_ratio:g}"
    key = f"{dataset_name}/{config.backbone}/{row}/seed{config.seed}"
    return RunSpec(
        key=key,
        dataset=str(path),
        dataset_name=dataset_name,
        config=config,
        output_dir=str(out / "runs" / dataset_name / config.backbone / row / f"seed{config.seed}"),
        tags={"entry": entry, "group": group, "label_fraction": f"{dataset.label_fraction:g}"},
    )


def run_benchmark(
    profile: Profile,
    out: str | Path,
    *,
    given: GivenConfigs | None = None,
    overrides: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    cpus_per_run: float = 1.0,
    workers: int = 0,
    build_engine: str = "ray",
    spaces_dir: Path = SPACES_DIR,
    reuse: bool = True,
    progress: Callable[[str], None] = print,
) -> BenchmarkResult:
    """Run a benchmark profile end to end; see the module docstring.

    Args:
        profile: what to run.
        out: the output folder.
        given: ``--configs`` overrides.
        overrides: ``--set`` overrides of every run; like ``given`` settings they also pin
            the field in tuning studies.
        experiment: MLflow experiment (default ``benchmark-<profile>``).
        cpus_per_run: CPUs per run (Ray tasks); two 1-CPU runs share a 2-core machine.
        workers: Ray Train workers per run (0: the trainer in a Ray task).
        build_engine: ``ray`` (Ray Data) or ``memory`` to build datasets.
        spaces_dir: where the tuning spaces live.
        reuse: reuse finished runs of an earlier, interrupted benchmark in ``out``.
        progress: receives the progress lines.
    """
    started = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = given or GivenConfigs()
    overrides = dict(overrides or {})
    check_overrides(overrides)
    experiment = experiment or f"benchmark-{profile.name}"
    tracker = Tracker(experiment, out)
    summary_run = tracker.start_run(
        f"{profile.name} benchmark",
        {"role": "benchmark", "profile": profile.name, "git_commit": tracker.commit},
        {
            "profile": profile.name,
            "datasets": ",".join(d.name for d in profile.datasets),
            "backbones": ",".join(profile.backbones),
            "methods": ",".join(profile.entries),
            "seeds": str(profile.seeds),
            "label_fractions": ",".join(f"{f:g}" for f in profile.label_fractions),
            "train": json.dumps(profile.train, sort_keys=True),
            "overrides": json.dumps(overrides, sort_keys=True),
            "tuned": str(profile.tune is not None),
        },
    )
    try:
        datasets: dict[str, tuple[DatasetSpec, Path]] = {}
        for base in profile.datasets:
            for fraction in profile.label_fractions:
                spec = base.with_label_fraction(fraction) if base.source != "path" else base
                if spec.name not in datasets:
                    path = ensure_dataset(spec, out / "datasets", build_engine, progress)
                    datasets[spec.name] = (spec, path)

        configs = {}
        for dataset_name, (_, path) in datasets.items():
            for backbone in profile.backbones:
                for entry in profile.entries:
                    if not runs_on(entry, path):
                        progress(f"skipped {dataset_name}/{backbone}/{entry}: no observed rows")
                        continue
                    chosen = {**given.for_run(entry, backbone), **overrides}
                    values = {**profile.train, **chosen}
                    if profile.tune is not None:
                        values.update(
                            tune_entry(
                                profile,
                                entry,
                                backbone,
                                dataset_name,
                                path,
                                chosen,
                                out,
                                experiment,
                                spaces_dir,
                                progress,
                            )
                        )
                    values.update(backbone=backbone, method=entry_method(entry, values))
                    values.pop("seed", None)
                    configs[(dataset_name, backbone, entry)] = values

        specs = plan_runs(profile, datasets, configs, out)
        progress(
            f"{len(specs)} runs ({profile.name}): {len(datasets)} dataset(s) x "
            f"{len(profile.backbones)} backbone(s) x {len(profile.entries)} method(s) x "
            f"{profile.seeds} seed(s) + {len(profile.ratio_study)} alpha/gamma ratio(s)"
        )
        outcomes = execute_runs(
            specs,
            tracker,
            role="cell",
            workers=workers,
            cpus_per_run=cpus_per_run,
            parent_run_id=summary_run,
            reuse=reuse,
            progress=progress,
        )
        rows = report.summarize(outcomes)
        files = write_report(profile, outcomes, rows, out)
        for path in files:
            tracker.log_artifacts(summary_run, path, "figures" if path.suffix == ".png" else None)
        seconds = time.perf_counter() - started
        failed = sum(not outcome.ok for outcome in outcomes)
        tracker.log_metrics(
            summary_run, {"runs": len(outcomes), "failed_runs": failed, "wall_seconds": seconds}
        )
        tracker.end_run(summary_run, "FINISHED")
    except BaseException:
        tracker.end_run(summary_run, "FAILED")
        raise
    return BenchmarkResult(
        output_dir=out,
        outcomes=outcomes,
        rows=rows,
        files=files,
        tracking=tracker.describe(),
        summary_run_id=summary_run,
        seconds=seconds,
    )


def _profile_line(profile: Profile) -> str:
    """The profile as it ran: its own description, or the grid the command line narrowed it to
    (a canned description such as "each tuned" would be false after ``--no-tune``)."""
    if profile == PROFILES.get(profile.name):
        return f"Profile `{profile.name}`: {profile.description}."
    fractions = ", ".join(f"{f:g}" for f in profile.label_fractions)
    return (
        f"Profile `{profile.name}` as narrowed on the command line: "
        f"{', '.join(d.base_name for d in profile.datasets)} at label fraction(s) {fractions}; "
        f"{', '.join(report.backbone_name(b) for b in profile.backbones)}; "
        f"{', '.join(report.method_name(e) for e in profile.entries)}; {profile.seeds} seed(s)."
    )


def write_report(
    profile: Profile, outcomes: Sequence[RunOutcome], rows: Sequence[report.SummaryRow], out: Path
) -> list[Path]:
    """Tables and figures into ``out`` (see :mod:`~invlearn_ray.distributed.report`)."""
    notes = [
        _profile_line(profile),
        f"Test metrics, mean ± sample std over {profile.seeds} seed(s); the best mean per "
        "backbone in bold. AUC over all test rows; GAUC = unweighted mean of per-user AUC; "
        "NDCG@K and MRR over each user's labeled test rows (read them against the random floors "
        "below); Recall@20 is full-catalogue (training items excluded).",
        "Configurations were "
        + (
            "tuned on validation with Ray Tune, the same budget per method."
            if profile.tune
            else "given (profile settings / --configs), not tuned."
        ),
    ]
    files = [
        report.write_results_csv(rows, out / "results.csv"),
        report.write_runs_csv(outcomes, out / "runs.csv"),
    ]
    markdown = report.results_markdown(rows, f"Benchmark `{profile.name}`", notes)
    (out / "results.md").write_text(markdown)
    files.append(out / "results.md")
    annotation = report.annotation_markdown(rows)
    if annotation:
        (out / "annotation.md").write_text(annotation)
        files.append(out / "annotation.md")
    files += report.write_figures(outcomes, rows, out / "figures")
    return files
