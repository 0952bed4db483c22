"""A dataset by name (:class:`DatasetSpec`), and building or reusing it: shared by the
benchmark and ``pipelines/tune.py``.

A dataset is a synthetic preset, ML-100K's pre-split files, or a folder built before; each
source can be built at a ``label_fraction`` (issue 6's sweep). :func:`ensure_dataset` builds it
with Ray Data (or in memory) under the benchmark's folder, and reuses a folder that already holds
exactly the same build.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import DATA_SEED, SplitOptions
from invlearn_ray.data.synthetic import PRESETS, SyntheticConfig
from invlearn_ray.distributed.build import build_dataset
from invlearn_ray.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("INVLEARN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ML100K_SPLIT = SHARED_DATA / "ml-100k" / "split"
DATASET_SOURCES = ("synthetic", "ml100k", "path")
"""Where a benchmark dataset comes from (:attr:`DatasetSpec.source`)."""

logger = logging.getLogger(__name__)


class DatasetChoiceError(ValueError, UserError):
    """A dataset name or folder is invalid; the message says which and what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the benchmark.

    Attributes:
        source: ``synthetic`` (a generator preset), ``ml100k`` (the pre-split ML-100K files)
            or ``path`` (a dataset folder built before).
        preset: the synthetic preset.
        path: the built folder (``path``) or the ML-100K split folder (``ml100k``).
        label_fraction: share of labeled training rows kept labeled (issue 6).
        seed: the build's seed: the synthetic generator's, the splits', the label fraction's
            and the sampling's (as ``build_data.py --seed``).
    """

    source: str
    preset: str = "default"
    path: str | None = None
    label_fraction: float = 1.0
    seed: int = DATA_SEED

    def __post_init__(self) -> None:
        if self.source not in DATASET_SOURCES:
            raise DatasetChoiceError(
                f"unknown dataset source {self.source!r}; valid: {list(DATASET_SOURCES)}"
            )
        if self.source == "synthetic" and self.preset not in PRESETS:
            raise DatasetChoiceError(
                f"unknown synthetic preset {self.preset!r}; valid: {sorted(PRESETS)}"
            )
        if not 0 < self.label_fraction <= 1:
            raise DatasetChoiceError(f"label_fraction must be in (0, 1]: {self.label_fraction}")
        if self.source == "path" and self.label_fraction != 1:
            raise DatasetChoiceError(
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
                SyntheticConfig.preset(self.preset, seed=self.seed), name=self.base_name
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
            dd.verified_manifest(self.path)
        else:
            self.build_config()

    def with_label_fraction(self, fraction: float) -> DatasetSpec:
        return dataclasses.replace(self, label_fraction=fraction)


def parse_dataset(text: str) -> DatasetSpec:
    """``synthetic``, ``synthetic:tiny``, ``ml100k``, ``ml100k:/path/to/split`` or a built
    dataset's location (a folder or an object-store URI).

    Raises:
        DatasetChoiceError: an unknown name, or a location that holds no built dataset.
    """
    kind, _, argument = text.partition(":")
    if kind == "synthetic":
        return DatasetSpec("synthetic", preset=argument or "default")
    if kind == "ml100k":
        return DatasetSpec("ml100k", path=argument or None)
    location = storage.absolute(text)
    if storage.is_file(storage.join(location, dd.MANIFEST_FILE)):
        return DatasetSpec("path", path=location)
    raise DatasetChoiceError(
        f"dataset {text!r}: not 'synthetic[:preset]', 'ml100k[:split folder]' or a built "
        f"dataset folder (no {dd.MANIFEST_FILE} at {location}); build one with "
        "pipelines/build_data.py"
    )


def ensure_dataset(spec: DatasetSpec, root: storage.Location, engine: str = "ray") -> str:
    """The dataset's location: built under ``root`` (a folder or an object-store URI; Ray Data,
    or in memory), or reused when a previous benchmark built exactly the same thing there."""
    config = spec.build_config()
    if config is None:
        return storage.absolute(spec.path)
    out = storage.join(storage.absolute(root), spec.name)
    wanted = json.loads(json.dumps(config.inputs()))
    if _built_from(out) == wanted:
        logger.info(f"dataset {spec.name}: reusing {out}")
        return out
    started = time.perf_counter()
    if engine == "ray":
        manifest = build_dataset(config, out, overwrite=True)
    else:
        manifest = build_dataset_in_memory(config, out, overwrite=True)
    counts = ", ".join(f"{split} {manifest.rows(split)}" for split in manifest.counts)
    logger.info(
        f"dataset {spec.name}: built with {engine} in {time.perf_counter() - started:.1f} s "
        f"({counts}) -> {out}"
    )
    return out


def _built_from(out: str) -> dict[str, Any] | None:
    """The inputs of the dataset built in ``out``; None when there is none this code reads
    (an older schema is rebuilt) or its files changed since the build."""
    try:
        return dd.verified_manifest(out).inputs
    except DatasetFormatError:
        return None
