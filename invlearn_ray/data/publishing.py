"""Folders that appear whole: written beside their destination, then renamed into place.

Every output folder a command publishes — a built dataset, a training run, a recommendations
folder — is written into a hidden sibling (:func:`new_staging_dir`, ``.<name>.staging-<id>``)
and swapped in by :func:`publish`: the previous folder is renamed aside
(``.<name>.replaced-<id>``), the new one renamed into place, the old one deleted. A crash at
any point leaves the destination holding the old folder or the new one, never a mix.

What a hard crash (power loss, ``kill -9``) leaves behind is a hidden sibling nobody deletes.
:func:`remove_stale` removes those leftovers older than :data:`STALE_AFTER_SECONDS` (a day: no
build or write into one folder takes that long without touching it) whenever a new staging
folder is made in the same parent, and logs each removal. Only the names made here are
touched, and those a caller names (``also``): a training run's fixed staging folder
(``.<name>.staging``) is a leftover only when it holds no Ray Train checkpoints a rerun would
resume from (:mod:`invlearn_ray.training.run_folder`).

An object store (``s3://``, ``gs://``) has no rename: :func:`writing_folder` writes there in
place under :mod:`invlearn_ray.storage`'s commit protocol instead — the old commit file
removed first, a marker put in, the old files deleted, every new file written, the commit
file (a dataset's ``manifest.json``) last. A reader sees the old folder, a folder that is
recognisably not committed, or the new one; a rebuild that fails leaves nothing there.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from invlearn_ray import storage

logger = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 24 * 3600
_LEFTOVER = re.compile(r"\..+\.(staging|replaced)-[0-9a-f]{12}")


def new_staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to write into (stale leftovers there removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap the finished ``staging`` folder in as ``out`` (deleting what ``out`` held)."""
    retired = None
    if out.exists():
        retired = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
        out.rename(retired)
    staging.rename(out)
    if retired is not None:
        shutil.rmtree(retired)


@contextmanager
def writing_folder(out: storage.Location, commit_file: str) -> Iterator[str]:
    """Where to write the folder that appears at ``out`` when the block ends.

    The caller writes every file into the yielded location, ``commit_file`` last. A local
    ``out`` gets a staging folder beside it, swapped in at the end (:func:`publish`); an
    object-store ``out`` is written in place under the commit protocol (see the module
    docstring). If the block raises, what it wrote is removed.

    Yields:
        The location to write into (an absolute local path, or ``out`` itself).
    """
    if storage.is_local(out):
        destination = Path(storage.resolve(out)[1])
        staging = new_staging_dir(destination)
        try:
            yield str(staging)
            publish(staging, destination)
        except BaseException:
            discard(staging)
            raise
        return
    storage.begin_write(out, commit_file)
    for name in storage.list_files(out, recursive=True):
        if name != storage.WRITING_MARKER:
            storage.delete_file(storage.join(out, name))
    try:
        yield storage.absolute(out)
        storage.end_write(out)
    except BaseException:
        storage.delete_tree(out)
        raise


def discard(staging: Path) -> None:
    """Remove a staging folder after a failed write."""
    shutil.rmtree(staging, ignore_errors=True)


def remove_stale(
    parent: Path,
    max_age_seconds: float = STALE_AFTER_SECONDS,
    also: Callable[[Path], bool] | None = None,
) -> list[Path]:
    """Delete the staging and replaced folders in ``parent`` untouched for ``max_age_seconds``.

    A folder's age is that of the newest entry inside it, so a slow write in progress is
    never mistaken for a leftover. Time: one ``stat`` per leftover's entry.

    Args:
        also: says which other folders of ``parent`` are leftovers too (e.g. a run's fixed-name
            staging folder that holds no checkpoints to resume from).

    Returns:
        The folders removed (each is logged as a warning).
    """
    if not parent.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in sorted(parent.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if not (_LEFTOVER.fullmatch(entry.name) or (also is not None and also(entry))):
            continue
        age = now - _newest_mtime(entry)
        if age <= max_age_seconds:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        logger.warning("removed %s: left by an interrupted write %.1f days ago", entry, age / 86400)
    return removed


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, directories, files in os.walk(folder):
        for name in (*directories, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:  # removed while we looked: someone is writing here
                return time.time()
    return newest
