"""Where files live: a *location* is a string — a local path or a URI ``pyarrow.fs`` understands.

``datasets/ml100k``, ``/data/ml100k``, ``file:///data/ml100k``, ``s3://bucket/ml100k`` and
``gs://bucket/ml100k`` are all locations. Every function here takes one, resolves it with
:func:`resolve` to a ``pyarrow.fs.FileSystem`` and a path inside it, and works the same on each.
Never pass a URI through :mod:`pathlib`: ``Path("s3://b/x")`` is ``s3:/b/x``, a local folder.

**Why not a shared folder.** On a cluster, a Ray task runs on whichever node has room, and
a worker node's disk is its own: a file a task writes to a local path is invisible to the
driver. Anything written by tasks and read elsewhere goes to a location every node reaches —
an object store — with the ``filesystem`` from :func:`resolve` handed to Ray Data.

**S3 settings** come from the standard AWS variables, read by ``pyarrow.fs`` itself (checked
with pyarrow 25): ``AWS_ENDPOINT_URL_S3`` (first) or ``AWS_ENDPOINT_URL`` (e.g.
``http://127.0.0.1:8333`` for a local server; the URL's scheme picks http or https),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``.
``FileSystem.from_uri`` honours the endpoint variables; ``S3FileSystem()`` built by hand does
not, which is why locations are always resolved from their URI. ``from_uri`` asks the endpoint
for the bucket's region (one request per bucket, then cached here; ``AWS_REGION`` does not
replace it) unless the URI names it. Options ride in the URI's query
(``s3://bucket/x?region=eu-west-1``, ``?allow_bucket_creation=true``). Every node of a
cluster needs the same variables (or an instance role): a Ray task resolves credentials where
it runs.

**Commit protocol.** An object store has no atomic rename, so a folder cannot be written
aside and swapped in. Instead a writer (:func:`begin_write`) first removes the folder's commit
file and puts a :data:`WRITING_MARKER` in it, writes every file, then writes the commit file
*last* — a list of every file with its size and SHA-256 (:func:`commit`) — and removes the
marker. A reader trusts a folder only through its commit file (:func:`read_commit`), so a
crash at any point leaves a folder that is recognisably not committed, and the marker tells
the next writer that what is there is its own leftover, safe to replace
(:func:`interrupted_write`). Built datasets follow the same protocol with their own
``manifest.json`` as the commit file (:mod:`invlearn_ray.data.dataset_dir`).

Errors: a location that cannot be resolved, reached or read is a one-line :class:`StorageError`
saying what failed, where, and what to check.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from invlearn_ray.errors import UserError

Location = str | os.PathLike
"""A local path (absolute, or relative to the working directory) or a URI."""

WRITING_MARKER = "_WRITING"
"""Present in a folder while a writer that follows the commit protocol is filling it."""
COMMIT_FILE = "_COMMIT.json"
"""The default commit file: every other file of the folder with its size and SHA-256."""
COMMIT_FORMAT = 1

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_S3_SETTINGS = (
    "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (for a server other than AWS), AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY"
)
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "ARROW_")
_CHUNK = 1 << 20


class StorageError(UserError):
    """A location could not be resolved, reached, read or written (one line: what, where, fix)."""


def is_uri(location: Location) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a plain local path."""
    return bool(_URI.match(os.fspath(location)))


def is_local(location: Location) -> bool:
    """Whether ``location`` is on this machine's own file system (a path or ``file://``).
    Decided from the text alone: no file system is reached (an S3 one would be asked for its
    bucket's region)."""
    return not is_uri(location) or os.fspath(location).lower().startswith("file:")


def resolve(location: Location) -> tuple[pafs.FileSystem, str]:
    """The file system holding ``location`` and the path inside it.

    A plain path is local and made absolute against the working directory (Ray workers run in
    other directories, so only absolute paths travel). A URI goes to
    ``pyarrow.fs.FileSystem.from_uri``; file systems are cached per scheme, host, query and
    the storage settings in the environment, so resolving is cheap.

    Raises:
        StorageError: an unknown scheme or a malformed URI.
    """
    text = os.fspath(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), os.path.abspath(text)
    head, _, query = text.partition("?")
    scheme, rest = head.split("://", 1)
    host, _, path = rest.partition("/")
    root = f"{scheme}://{host}/" + (f"?{query}" if query else "")
    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    filesystem, root_path = _filesystem(root, settings)
    if scheme.lower() == "file":
        return filesystem, posixpath.normpath("/" + path)
    return filesystem, posixpath.join(root_path, path).rstrip("/") if path else root_path


@functools.lru_cache(maxsize=32)
def _filesystem(root: str, settings: tuple) -> tuple[pafs.FileSystem, str]:
    """``from_uri`` of a location's root (``settings``: the environment it was made under)."""
    try:
        filesystem, path = pafs.FileSystem.from_uri(root)
    except OSError as error:  # e.g. S3 looking up the bucket's region
        raise StorageError(f"{root}: cannot reach ({_first_line(error)}). {_hint(root)}") from None
    except (pa.ArrowException, ValueError) as error:
        raise StorageError(
            f"{root}: not a storage location ({_first_line(error)}). Give a local path or a "
            "URI pyarrow.fs understands (s3://bucket/path, gs://bucket/path, file:///path)."
        ) from None
    return filesystem, path.rstrip("/")


def absolute(location: Location) -> str:
    """``location`` as a string any process can use: a local path made absolute, a URI as is."""
    text = os.fspath(location)
    return text if is_uri(text) else os.path.abspath(text)


def join(location: Location, *parts: str) -> str:
    """``location`` with ``parts`` appended, as a location of the same kind."""
    text = os.fspath(location)
    if not is_uri(text):
        return str(Path(text, *parts))
    head, query = text.split("?", 1) if "?" in text else (text, "")
    joined = "/".join([head.rstrip("/"), *(part.strip("/") for part in parts)])
    return f"{joined}?{query}" if query else joined


def name(location: Location) -> str:
    """The last component of ``location`` (a file or folder name)."""
    text = os.fspath(location).split("?", 1)[0].rstrip("/")
    return text.rsplit("/", 1)[-1] if is_uri(text) else Path(text).name


def parent(location: Location) -> str:
    """The folder holding ``location``, as a location of the same kind (a URI keeps its query,
    which carries the store's options)."""
    text = os.fspath(location)
    if not is_uri(text):
        return str(Path(text).parent)
    head, query = text.split("?", 1) if "?" in text else (text, "")
    scheme, rest = head.split("://", 1)
    above = rest.rstrip("/").rsplit("/", 1)[0] if "/" in rest.rstrip("/") else rest
    return f"{scheme}://{above}" + (f"?{query}" if query else "")


def _info(location: Location) -> pafs.FileInfo:
    filesystem, path = resolve(location)
    with _reporting("look up", location):
        return filesystem.get_file_info(path)


def exists(location: Location) -> bool:
    """Whether a file or folder is at ``location`` (on S3: any object under the prefix)."""
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: Location) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: Location) -> bool:
    return _info(location).type == pafs.FileType.Directory


def size(location: Location) -> int:
    """The size of the file at ``location`` in bytes."""
    info = _info(location)
    if info.type != pafs.FileType.File:
        raise StorageError(f"{os.fspath(location)}: no such file. Check the location.")
    return info.size


@contextmanager
def open_input(location: Location) -> Iterator[pa.NativeFile]:
    """The file at ``location``, open for random-access reading."""
    filesystem, path = resolve(location)
    with _reporting("read", location):
        handle = filesystem.open_input_file(path)
    try:
        yield handle
    finally:
        handle.close()


@contextmanager
def open_output(location: Location) -> Iterator[pa.NativeFile]:
    """A new file at ``location`` (replacing one there), open for writing; on an object store
    it appears whole when closed. A local parent folder is created."""
    filesystem, path = resolve(location)
    with _reporting("write", location):
        if isinstance(filesystem, pafs.LocalFileSystem):
            filesystem.create_dir(posixpath.dirname(path), recursive=True)
        handle = filesystem.open_output_stream(path)
    try:
        yield handle
    finally:
        with _reporting("write", location):
            handle.close()


def read_bytes(location: Location) -> bytes:
    with open_input(location) as handle, _reporting("read", location):
        return handle.read()


def write_bytes(location: Location, data: bytes) -> None:
    with open_output(location) as handle, _reporting("write", location):
        handle.write(data)


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def write_text(location: Location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def make_dirs(location: Location) -> None:
    """Create the folder ``location`` and its parents (object stores need none: a no-op there
    beyond what the store does for an empty prefix)."""
    filesystem, path = resolve(location)
    with _reporting("create the folder", location):
        filesystem.create_dir(path, recursive=True)


def list_files(location: Location, recursive: bool = False) -> list[str]:
    """Names of the files in the folder ``location`` (relative paths with ``/`` when
    ``recursive``), sorted; empty when there is no such folder."""
    filesystem, path = resolve(location)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    with _reporting("list", location):
        infos = filesystem.get_file_info(selector)
    prefix = path.rstrip("/") + "/"
    return sorted(
        info.path[len(prefix) :] if info.path.startswith(prefix) else info.base_name
        for info in infos
        if info.type == pafs.FileType.File
    )


def delete_file(location: Location, missing_ok: bool = True) -> None:
    filesystem, path = resolve(location)
    with _reporting("delete", location):
        try:
            filesystem.delete_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise


def delete_tree(location: Location) -> None:
    """Delete the folder ``location`` and everything in it (nothing there is not an error)."""
    filesystem, path = resolve(location)
    if not is_uri(location) and Path(path) in (Path("/"), Path.home()):
        raise StorageError(f"{location}: refusing to delete a root or home folder")
    with _reporting("delete", location):
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return
        if "/" not in path.strip("/") and not isinstance(filesystem, pafs.LocalFileSystem):
            filesystem.delete_dir_contents(path)  # a bucket: empty it, keep it
        else:
            filesystem.delete_dir(path)


def copy_tree(source: Location, destination: Location) -> None:
    """Copy the folder ``source`` to ``destination`` (either may be local or a URI), e.g. a
    local result folder up to an object store, or a dataset down to a local cache."""
    source_fs, source_path = resolve(source)
    destination_fs, destination_path = resolve(destination)
    with _reporting(f"copy to {os.fspath(destination)} from", source):
        # A local destination must exist: copy_files creates no folder there.
        destination_fs.create_dir(destination_path, recursive=True)
        pafs.copy_files(
            source_path,
            destination_path,
            source_filesystem=source_fs,
            destination_filesystem=destination_fs,
        )


def sha256(location: Location) -> str:
    """SHA-256 of the file at ``location``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_input(location) as handle, _reporting("read", location):
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """One committed file: its path relative to the folder, size and SHA-256."""

    path: str
    bytes: int
    sha256: str


def begin_write(folder: Location, commit_file: str = COMMIT_FILE) -> None:
    """Start writing ``folder`` under the commit protocol: remove its commit file (from now on
    it is not a committed folder), then mark it as being written."""
    delete_file(join(folder, commit_file))
    write_bytes(join(folder, WRITING_MARKER), b"")


def end_write(folder: Location) -> None:
    """Finish a write whose commit file is in place: remove the marker."""
    delete_file(join(folder, WRITING_MARKER))


def interrupted_write(folder: Location, commit_file: str = COMMIT_FILE) -> bool:
    """Whether ``folder`` holds a write that began and never committed (safe to replace)."""
    return is_file(join(folder, WRITING_MARKER)) and not is_file(join(folder, commit_file))


def record_files(folder: Location, skip: Sequence[str] = ()) -> list[FileRecord]:
    """Every file under ``folder`` (but the marker, and ``skip``), with size and SHA-256.
    Time: one read of every byte."""
    skipped = {WRITING_MARKER, *skip}
    return [
        FileRecord(path, size(join(folder, path)), sha256(join(folder, path)))
        for path in list_files(folder, recursive=True)
        if path not in skipped
    ]


def commit(
    folder: Location, document: dict[str, Any] | None = None, commit_file: str = COMMIT_FILE
) -> list[FileRecord]:
    """Commit ``folder`` after :func:`begin_write` and every file written: write the commit
    file last (``document``'s keys, ``format`` and ``files``: every file's size and SHA-256),
    then remove the marker.

    Returns:
        The files committed.
    """
    records = record_files(folder, skip=(commit_file,))
    body = {**(document or {}), "format": COMMIT_FORMAT, "files": [asdict(r) for r in records]}
    write_text(join(folder, commit_file), json.dumps(body, indent=2) + "\n")
    end_write(folder)
    return records


def read_commit(
    folder: Location, commit_file: str = COMMIT_FILE, full_hash: bool = True
) -> dict[str, Any]:
    """The commit file of ``folder``, after checking that its files are exactly those committed:
    present, of the recorded size and (``full_hash``) SHA-256, and no others.

    Raises:
        StorageError: no commit file (the folder was never committed, or a write of it was
            interrupted), or a file missing, changed or added since.
    """
    where = os.fspath(folder)
    path = join(folder, commit_file)
    if not is_file(path):
        state = "its write was interrupted" if interrupted_write(folder, commit_file) else "none"
        raise StorageError(
            f"{where}: not a committed folder (no {commit_file}; {state}). Write it again."
        )
    try:
        body = json.loads(read_text(path))
        records = [FileRecord(**record) for record in body["files"]]
    except (ValueError, KeyError, TypeError) as error:
        raise StorageError(
            f"{path}: not a commit file ({_first_line(error)}). Write the folder again."
        ) from None
    present = set(list_files(folder, recursive=True)) - {commit_file, WRITING_MARKER}
    for record in records:
        location = join(folder, record.path)
        if record.path not in present:
            raise StorageError(f"{location}: committed but missing. Write the folder again.")
        problem = None
        if size(location) != record.bytes:
            problem = f"{size(location)} bytes, but {record.bytes} were committed"
        elif full_hash and sha256(location) != record.sha256:
            problem = "its content differs from what was committed"
        if problem:
            raise StorageError(f"{location}: {problem}. Write the folder again.")
    extra = sorted(present - {record.path for record in records})
    if extra:
        raise StorageError(
            f"{join(folder, extra[0])}: not part of the commit. Write the folder again."
        )
    return body


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hint(location: Location) -> str:
    scheme = os.fspath(location).split("://", 1)[0].lower() if is_uri(location) else "file"
    if scheme == "s3":
        return f"Check the URI, that the bucket exists, and the S3 settings ({_S3_SETTINGS})."
    if scheme in ("gs", "gcs"):
        return "Check the URI, that the bucket exists, and the Google Cloud credentials."
    return "Check the path and its permissions."


@contextmanager
def _reporting(action: str, location: Location) -> Iterator[None]:
    """Turn a file-system failure into a one-line :class:`StorageError`."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(
            f"{os.fspath(location)}: cannot {action}: no such file or folder. Check the location."
        ) from None
    except (OSError, pa.ArrowException) as error:
        raise StorageError(
            f"{os.fspath(location)}: cannot {action} ({_first_line(error)}). {_hint(location)}"
        ) from None
