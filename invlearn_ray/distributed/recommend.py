"""Top-K recommendations from a saved model: training items excluded, raw ids in and out.

A model folder written by a training run (``<run>/model/``) is self-contained: the weights
and description (:mod:`invlearn_ray.models.checkpoint`), the dataset's ``id_map/`` and
``seen_items.pt`` (each user's training items). So recommending needs no dataset folder, and a
model cannot be paired with the id map or exclusion set of another dataset by mistake.

* :class:`Recommender` — one process: load once, ``recommend(raw_user_ids, k)``.
* :func:`recommend_to_parquet` — batch inference through Ray Data: the requested users become
  a dataset, ``map_batches`` runs :class:`TopKBatchScorer` (a callable class, so each actor
  loads the model once) and the rows are written as Parquet with columns
  ``user`` (raw id), ``rank`` (1 = best), ``item`` (raw id), ``score`` (the model's logit).

**Locations.** The model and the output are locations (:mod:`invlearn_ray.storage`): a local
path, or a URI such as ``s3://bucket/runs/x/model``. The scoring actors read the model and
write their Parquet files from whichever node they run on, so on a cluster of several nodes
both must be in an object store. An object-store model is trusted only through its run's
commit file (a half-uploaded run is refused); the output is published under the same commit
protocol (:func:`~invlearn_ray.data.publishing.writing_folder`): its ``_COMMIT.json``, every
Parquet file's size and SHA-256 with the row count, is written last.

Ties in score are broken by the lower item index, so a ranking is reproducible. A user with
fewer than ``k`` unseen items gets fewer rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data import publishing
from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.errors import UserError
from invlearn_ray.evaluation import ranking
from invlearn_ray.models.backbones import Backbone
from invlearn_ray.models.checkpoint import (
    ModelFormatError,
    load_model,
    load_tensors,
    read_model_description,
)
from invlearn_ray.training.run_folder import (
    MODEL_DATA_FILES,
    MODEL_DIR,
    MODEL_FILE_DIGESTS,
    SEEN_ITEMS_FILE,
)

if TYPE_CHECKING:
    from ray.data import Dataset

USER, RANK, ITEM, SCORE = "user", "rank", "item", "score"
USER_INDEX = "user_index"
OUTPUT_SCHEMA = pa.schema(
    [(USER, pa.string()), (RANK, pa.int32()), (ITEM, pa.string()), (SCORE, pa.float32())]
)
_SHOWN_IDS = 5


class UnknownUserError(KeyError, UserError):
    """Requested user ids that the model's id map does not hold."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class OutputExistsError(FileExistsError, UserError):
    """The recommendations folder holds something that must not be replaced."""


def read_raw_ids(model_dir: storage.Location, kind: str) -> np.ndarray:
    """Raw ids of ``kind`` (``users``/``items``) of a model folder, by contiguous index.

    Raises:
        ModelFormatError: the id map is missing, unreadable, or its indices are not
            ``0..n-1``.
    """
    path = storage.join(model_dir, dd.ID_MAP_DIR, f"{kind}.parquet")
    if not storage.is_file(path):
        raise ModelFormatError(
            f"{path} is missing: {model_dir} is not a model folder from pipelines/train.py "
            "(it must hold model.pt, model.json, id_map/ and seen_items.pt)"
        )
    try:
        filesystem, inside = storage.resolve(path)
        table = pq.read_table(inside, filesystem=filesystem, columns=["raw_id", "index"])
        table = table.sort_by("index")
    except (pa.ArrowException, OSError) as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFormatError(f"{path}: not a readable id map ({problem})") from None
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(len(index))):
        raise ModelFormatError(
            f"{path}: indices are not 0..{len(index) - 1}; the id map was changed after "
            "training. Re-save the model with pipelines/train.py."
        )
    return table.column("raw_id").to_numpy(zero_copy_only=False).astype(str)


def lookup_users(user_ids: np.ndarray, raw_ids: Sequence[str]) -> np.ndarray:
    """Contiguous indices of ``raw_ids`` in ``user_ids`` (raw ids by index).

    Raises:
        UnknownUserError: some ids are not in the id map (the message lists a few of them and a
            few known ones).
    """
    requested = np.asarray(list(raw_ids), dtype=str)
    order = np.argsort(user_ids, kind="stable")
    sorted_ids = user_ids[order]
    position = np.searchsorted(sorted_ids, requested).clip(max=max(len(sorted_ids) - 1, 0))
    known = sorted_ids[position] == requested if len(sorted_ids) else np.zeros(0, dtype=bool)
    if not known.all():
        unknown = list(dict.fromkeys(requested[~known].tolist()))
        raise UnknownUserError(
            f"{len(unknown)} unknown user id(s), e.g. {unknown[:_SHOWN_IDS]}; the model knows "
            f"{len(user_ids)} users, e.g. {user_ids[:_SHOWN_IDS].tolist()} (ids are the raw ids "
            "of the training data, compared as strings)"
        )
    return order[position]


@torch.no_grad()
def top_k_unseen(
    model: Backbone, users: Tensor, seen: UserItemIndex, k: int
) -> tuple[Tensor, Tensor]:
    """The ``k`` best-scored items per user among those not seen in training.

    The same top-k as the full-ranking metrics
    (:func:`invlearn_ray.evaluation.ranking.top_k_unseen`): memory ``len(users) × n_items``
    scores, time one read of them plus a top-(k+1).

    Returns:
        ``(items, scores)``, both ``[len(users), min(k, n_items)]``, best first, equal scores
        by lower item index; where a user has fewer unseen items than ``k`` the tail holds
        score ``-inf`` (callers drop it).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    was_training = model.training
    model.eval()
    scores = model.score_all(users).float()
    model.train(was_training)
    return ranking.top_k_unseen(scores, users, seen, k)


@dataclass(frozen=True)
class Recommender:
    """A saved model with its id maps and exclusion set, ready to rank.

    Attributes:
        model: the backbone, in eval mode.
        user_ids, item_ids: raw ids indexed by contiguous index.
        seen: each user's training items (never recommended).
    """

    model: Backbone
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: UserItemIndex

    @classmethod
    def load(cls, model_dir: storage.Location, device: str | torch.device = "cpu") -> Recommender:
        """Load a model folder written by a training run (see the module docstring), from
        any location (the files are read, not their commit: see :func:`check_committed`)."""
        model = load_model(model_dir, map_location=device).eval()
        _check_file_digests(model_dir)
        seen = _read_seen_items(storage.join(model_dir, SEEN_ITEMS_FILE), device)
        user_ids, item_ids = read_raw_ids(model_dir, "users"), read_raw_ids(model_dir, "items")
        shapes = (len(user_ids), len(item_ids), seen.n_users, seen.n_items)
        if shapes != (model.n_users, model.n_items, model.n_users, model.n_items):
            raise ModelFormatError(
                f"{model_dir}: id maps / seen items cover {shapes[0]} users x {shapes[1]} items "
                f"and {shapes[2]} x {shapes[3]}, but the model has {model.n_users} x "
                f"{model.n_items}; the folder mixes files of different datasets. Re-save the "
                "model with pipelines/train.py."
            )
        return cls(model=model, user_ids=user_ids, item_ids=item_ids, seen=seen)

    def user_indices(self, raw_ids: Sequence[str]) -> Tensor:
        """Contiguous indices of raw user ids (see :func:`lookup_users`)."""
        indices = lookup_users(self.user_ids, raw_ids)
        return torch.as_tensor(indices, dtype=torch.int64, device=self.seen.indptr.device)

    def recommend_indices(self, users: Tensor, k: int) -> pa.Table:
        """Top-``k`` rows (``OUTPUT_SCHEMA``) for users given by contiguous index."""
        items, scores = (part.cpu() for part in top_k_unseen(self.model, users, self.seen, k))
        kept = torch.isfinite(scores)  # -inf marks a user's ranks beyond its unseen items
        ranks = torch.arange(1, items.shape[1] + 1, dtype=torch.int32).expand_as(items)
        row_users = users.cpu().reshape(-1, 1).expand_as(items)
        return pa.table(
            {
                USER: pa.array(self.user_ids[row_users[kept].numpy()]),
                RANK: pa.array(ranks[kept].numpy()),
                ITEM: pa.array(self.item_ids[items[kept].numpy()]),
                SCORE: pa.array(scores[kept].numpy().astype(np.float32)),
            },
            schema=OUTPUT_SCHEMA,
        )

    def recommend(self, raw_user_ids: Sequence[str], k: int) -> pa.Table:
        """Top-``k`` unseen items for each raw user id, one row per (user, rank)."""
        return self.recommend_indices(self.user_indices(raw_user_ids), k)


def _check_file_digests(model_dir: storage.Location) -> None:
    """The id maps and seen items are the ones saved with the model (when it recorded them)."""
    recorded = read_model_description(model_dir)["metadata"].get(MODEL_FILE_DIGESTS)
    if recorded is None:  # saved before digests were recorded: the size checks remain
        return
    for name in MODEL_DATA_FILES:
        path = storage.join(model_dir, name)
        if storage.is_file(path) and recorded.get(name) != storage.sha256(path):  # missing: below
            raise ModelFormatError(
                f"{path} is not the file saved with this model (its SHA-256 "
                "differs from the one model.json records); the folder mixes files of different "
                "datasets. Re-save the model with pipelines/train.py."
            )


def _read_seen_items(path: storage.Location, device: str | torch.device) -> UserItemIndex:
    """``seen_items.pt``: each user's training items, as a checked CSR index."""
    if not storage.is_file(path):
        raise ModelFormatError(
            f"{path} is missing: without each user's training items the model would "
            "recommend what users already have; re-save the model with pipelines/train.py"
        )
    state = load_tensors(path, device)
    try:
        indptr, items, n_items = state["indptr"], state["items"], int(state["n_items"])
        valid = (
            indptr.ndim == 1
            and len(indptr) >= 1
            and int(indptr[0]) == 0
            and int(indptr[-1]) == len(items)
            and bool((indptr[1:] >= indptr[:-1]).all())
            and (not len(items) or 0 <= int(items.min()) <= int(items.max()) < n_items)
        )
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError):
        valid = False
    if not valid:
        raise ModelFormatError(
            f"{path}: not an index of each user's training items (indptr, items, n_items). "
            "Re-save the model with pipelines/train.py."
        )
    return UserItemIndex(indptr, items, n_items)


class TopKBatchScorer:
    """``map_batches`` callable class: loads the model once per actor, ranks batches of users.

    Args:
        model_dir: a model folder's location (see :class:`Recommender`), read by each actor
            on its own node.
        k: items per user.
        device: where each actor scores (``cuda`` for GPU actors).
    """

    def __init__(self, model_dir: str, k: int, device: str = "cpu") -> None:
        self.recommender = Recommender.load(model_dir, device=device)
        self.k = k
        self.device = device

    def __call__(self, batch: pa.Table) -> pa.Table:
        # A copy: Arrow buffers are read-only, and torch wants writable memory.
        users = torch.from_numpy(batch.column(USER_INDEX).to_numpy().copy()).to(self.device)
        return self.recommender.recommend_indices(users, self.k)


def check_committed(model_dir: storage.Location) -> str | None:
    """Refuse an object-store model whose run was not committed whole.

    A run in an object store is uploaded file by file and committed last (its ``_COMMIT.json``,
    :func:`~invlearn_ray.training.run_folder.upload_run`), so a half-uploaded or half-replaced
    run can pair new weights with an old description. The commit file is looked for in the
    model folder, then in its run folder (for ``<run>/model``). A local model is renamed into
    place whole and has none. Time: one read of the committed folder (sizes and SHA-256).

    Returns:
        The committed folder (None for a local model).

    Raises:
        StorageError: no commit file, or a file missing, changed or added since the commit.
    """
    if storage.is_local(model_dir):
        return None
    folders = [storage.absolute(model_dir)]
    if storage.name(model_dir) == MODEL_DIR:
        folders.append(storage.parent(folders[0]))
    has_commit = (f for f in folders if storage.is_file(storage.join(f, storage.COMMIT_FILE)))
    committed = next(has_commit, folders[-1])
    storage.read_commit(committed)
    return committed


def check_request(
    model_dir: storage.Location,
    output_dir: storage.Location,
    users: Sequence[str] | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Everything that can be wrong with a request, checked before any scoring starts.

    Checks an object-store model's commit (:func:`check_committed`), loads the model folder
    whole (:meth:`Recommender.load`: weights against their description, id maps and training
    items against the model's sizes), looks the users up, and checks that ``output_dir`` may be
    written. Time: one model load on this process (two reads of an object-store model).

    Returns:
        The contiguous indices of the requested users (every user when ``users`` is None).

    Raises:
        ModelFormatError: the model folder is damaged or mixes files of different models.
        StorageError: a location cannot be reached, or an object-store model is not committed.
        UnknownUserError: a requested user id is not in the model's id map.
        OutputExistsError: see :func:`check_output_dir`, or the output would lie inside an
            object-store model's committed run (an extra file there breaks its commit).
    """
    committed = check_committed(model_dir)
    user_ids = Recommender.load(model_dir).user_ids
    if committed is not None and _is_within(output_dir, committed):
        raise OutputExistsError(
            f"{output_dir} lies inside the committed run {committed}, whose commit lists its "
            "own files only; choose an --out outside it (default: <run>.recommendations)"
        )
    check_output_dir(output_dir, overwrite)
    if users is None:
        return np.arange(len(user_ids), dtype=np.int64)
    return lookup_users(user_ids, users)


def _is_within(location: storage.Location, folder: str) -> bool:
    inner = storage.absolute(location).split("?", 1)[0].rstrip("/")
    outer = folder.split("?", 1)[0].rstrip("/")
    return inner == outer or inner.startswith(outer + "/")


def check_output_dir(output_dir: storage.Location, overwrite: bool) -> None:
    """Refuse an output folder whose contents must not be replaced.

    An earlier output's commit file and an interrupted write's marker are ours; a folder
    holding the marker and no commit file is a write that never finished, replaced without
    ``overwrite`` (:func:`~invlearn_ray.storage.interrupted_write`).

    Raises:
        OutputExistsError: ``output_dir`` is a file, holds files other than Parquet (even with
            ``overwrite``: it only replaces earlier recommendations), or holds Parquet files
            and ``overwrite`` is off.
    """
    if storage.is_file(output_dir):
        raise OutputExistsError(f"{output_dir} is a file; choose a new or empty --out folder")
    names = storage.list_files(output_dir, recursive=True)
    ours = {storage.COMMIT_FILE, storage.WRITING_MARKER}
    others = [n for n in names if n not in ours and ("/" in n or not n.endswith(".parquet"))]
    if others:
        raise OutputExistsError(
            f"{output_dir} holds files other than Parquet ({others[:_SHOWN_IDS]}); refusing to "
            "write recommendations there. Choose a new or empty --out folder."
        )
    if not names or storage.interrupted_write(output_dir):
        return
    if not overwrite:
        raise OutputExistsError(
            f"{output_dir} already holds recommendations; pass overwrite=True (--overwrite) to "
            "replace them, or choose a new --out folder"
        )


def recommend_to_parquet(
    model_dir: storage.Location,
    output_dir: storage.Location,
    k: int = 20,
    users: Sequence[str] | None = None,
    batch_size: int = 256,
    num_actors: int = 1,
    use_gpu: bool = False,
    overwrite: bool = False,
) -> int:
    """Write every requested user's top-``k`` unseen items as Parquet, through Ray Data.

    The request is checked first (:func:`check_request`), before Ray is touched or anything
    is deleted. The actors write their Parquet files straight to the output location, from
    whichever node they run on; the folder is published by
    :func:`~invlearn_ray.data.publishing.writing_folder` and committed last (``_COMMIT.json``:
    every file's size and SHA-256, and the row count). Locally it is written beside
    ``output_dir`` and swapped in whole, so a failure leaves the earlier recommendations as
    they were; in an object store a failure leaves no output (never a partial one that looks
    committed). Cost beyond the scoring: one read of the written files on the driver, for the
    commit's SHA-256 (``n_users × k`` rows of four small columns).

    Args:
        model_dir: a model folder written by a training run (a local path or a URI).
        output_dir: the Parquet folder to write (must be new or empty, unless ``overwrite``).
        k: items per user.
        users: raw user ids; None means every user of the model.
        batch_size: users per ``map_batches`` batch (memory: ``batch_size × n_items`` scores).
        num_actors: scoring actors (each loads the model once).
        use_gpu: one GPU per actor.
        overwrite: replace an output folder holding only Parquet files.

    Returns:
        The number of rows written.

    Raises:
        ModelFormatError, StorageError, UnknownUserError, OutputExistsError: see
            :func:`check_request`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model_dir, output_dir = storage.absolute(model_dir), storage.absolute(output_dir)
    indices = check_request(model_dir, output_dir, users, overwrite)
    with publishing.writing_folder(output_dir, storage.COMMIT_FILE) as target:
        ranked = _rank(model_dir, indices, k, batch_size, num_actors, use_gpu)
        filesystem, path = storage.resolve(target)
        ranked.write_parquet(path, filesystem=filesystem)
        n_rows = count_rows(target)
        document = {"kind": "recommendations", "rows": n_rows, "k": k, "model": model_dir}
        storage.commit(target, document)
    return n_rows


def _rank(
    model_dir: str, indices: np.ndarray, k: int, batch_size: int, num_actors: int, use_gpu: bool
) -> Dataset:
    """The lazy Ray Dataset of ranked rows (``OUTPUT_SCHEMA``) for users by contiguous index."""
    # Imported here: ranking in one process (Recommender) must work where Ray is absent.
    import ray.data

    requests = ray.data.from_arrow(pa.table({USER_INDEX: pa.array(indices, type=pa.int64())}))
    return requests.map_batches(
        TopKBatchScorer,
        fn_constructor_kwargs={
            "model_dir": model_dir,
            "k": k,
            "device": "cuda" if use_gpu else "cpu",
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=1 if use_gpu else 0,
    )


def count_rows(folder: storage.Location) -> int:
    """Rows in the Parquet files of ``folder``, from their footers (one small read per file)."""
    total = 0
    for name in storage.list_files(folder):
        if name.endswith(".parquet"):
            with storage.open_input(storage.join(folder, name)) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
    return total
