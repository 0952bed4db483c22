"""Load a built dataset directory — local or on an object store — into :class:`RecData`
tensors — pyarrow only, no Ray.

The GPU benchmark host has torch and pyarrow but may lack Ray, so loading never imports it.
Every file read is first verified against the manifest
(:func:`~invlearn_ray.data.dataset_dir.verify_dataset`). Rows of every split are sorted by
``row`` (their input position), so the tensors do not depend on how many shards, or which
engine, wrote the folder.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import torch

from invlearn_ray import storage
from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.data.recdata import Interactions, ObservedUnlabeled, RecData, UserItemIndex
from invlearn_ray.data.splits import COLD
from invlearn_ray.data.synthetic import PlantedTruth


def _tensor(table: pa.Table, name: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(table.column(name).to_numpy(zero_copy_only=False).copy()).to(dtype)


def _interactions(table: pa.Table) -> Interactions:
    return Interactions(
        users=_tensor(table, cn.USER, torch.int64),
        items=_tensor(table, cn.ITEM, torch.int64),
        labels=_tensor(table, cn.LABEL, torch.float32),
    )


def recdata_from_tables(
    tables: dict[str, pa.Table],
    *,
    n_users: int,
    n_items: int,
    truth: PlantedTruth | None,
    name: str,
    manifest: Manifest,
) -> RecData:
    """Assemble :class:`RecData` from output tables (as written to, or read from, a folder).

    ``seen_in_training`` holds every training-split interaction: training-train,
    training-test and all of ``unclear/`` (unclear rows and label-density-hidden rows) — the
    exclusion set of unlabeled sampling. Hidden labels go only to
    ``ObservedUnlabeled.hidden_labels``, which training never reads.
    """
    ordered = {key: table.sort_by(cn.ROW) for key, table in tables.items() if key != "unlabeled"}
    unclear = ordered["unclear"]
    train_pairs = [ordered[key] for key in ("train_train", "train_test", "unclear")]
    seen = UserItemIndex.from_pairs(
        torch.cat([_tensor(t, cn.USER, torch.int64) for t in train_pairs]),
        torch.cat([_tensor(t, cn.ITEM, torch.int64) for t in train_pairs]),
        n_users,
        n_items,
    )
    return RecData(
        n_users=n_users,
        n_items=n_items,
        train_train=_interactions(ordered["train_train"]),
        train_test=_interactions(ordered["train_test"]),
        valid=_interactions(ordered["valid"]),
        test=_interactions(ordered["test"]),
        observed_unlabeled=ObservedUnlabeled(
            users=_tensor(unclear, cn.USER, torch.int64),
            items=_tensor(unclear, cn.ITEM, torch.int64),
            hidden_labels=_tensor(unclear, dd.HIDDEN_LABEL, torch.int8),
        ),
        seen_in_training=seen,
        truth=truth,
        cold_valid=_tensor(ordered["valid"], COLD, torch.bool),
        cold_test=_tensor(ordered["test"], COLD, torch.bool),
        name=name,
        manifest=manifest,
    )


def load_dataset(
    path: storage.Location, device: torch.device | str = "cpu", full_hash: bool = False
) -> RecData:
    """Load a dataset folder written by ``pipelines/build_data.py`` (either engine).

    Args:
        path: the dataset folder (holding ``manifest.json``): a local path or a URI
            (``s3://bucket/ml100k``; see :mod:`invlearn_ray.storage`).
        device: where to put the tensors.
        full_hash: verify every byte of every file, not only sizes and Parquet footers.

    Returns:
        Every :class:`RecData` field filled; ``truth`` is the planted truth for synthetic data.

    Raises:
        DatasetFormatError: a missing folder, a folder that is not a dataset, a schema-version
            mismatch, or a file or count that differs from what the build wrote.
    """
    directory = os.fspath(path)
    manifest = Manifest.read(directory)
    dd.verify_dataset(directory, manifest, (*dd.OUTPUT_SPLITS, dd.ID_MAP_DIR), full_hash)
    tables = {name: dd.read_split(storage.join(directory, name)) for name in dd.OUTPUT_SPLITS}
    truth = None
    if storage.is_file(storage.join(directory, dd.TRUTH_FILE)):
        truth = PlantedTruth.load(storage.join(directory, dd.TRUTH_FILE))
    data = recdata_from_tables(
        tables,
        n_users=manifest.n_users,
        n_items=manifest.n_items,
        truth=truth,
        name=manifest.name,
        manifest=manifest,
    )
    return data.to(device) if torch.device(device) != torch.device("cpu") else data


def load_unlabeled_draw(
    path: storage.Location,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stored epoch-0 unlabeled draw: ``(users, items, source_rows)``, in draw order.

    Draw order is training-train rows by ``row``, then training-test rows by ``row``, each
    repeated ``sampling.rate`` times (see ``build.draw_unlabeled``).
    """
    directory = os.fspath(path)
    dd.verify_dataset(directory, Manifest.read(directory), ("unlabeled", "train_test"))
    table = dd.read_split(storage.join(directory, "unlabeled"))
    rows = table.column(dd.SOURCE_ROW).to_numpy()
    train_test_rows = dd.read_split(storage.join(directory, "train_test"), columns=[cn.ROW])
    in_train_test = np.isin(rows, train_test_rows.column(cn.ROW).to_numpy())
    # Stable sort: the draws of one source row keep their file order.
    order = np.lexsort((rows, in_train_test))
    table = table.take(pa.array(order))
    return (
        _tensor(table, cn.USER, torch.int64),
        _tensor(table, cn.ITEM, torch.int64),
        _tensor(table, dd.SOURCE_ROW, torch.int64),
    )
