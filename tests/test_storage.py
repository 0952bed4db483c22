"""Locations — local paths, ``file://`` and ``s3://`` URIs — behave alike through one module."""

from __future__ import annotations

import uuid

import pyarrow.fs as pafs
import pytest

from invlearn_ray import storage
from invlearn_ray.errors import UserError


@pytest.fixture(params=["path", "file-uri"])
def local_root(request, tmp_path) -> str:
    """A local folder, as a plain path or as a ``file://`` URI."""
    return str(tmp_path) if request.param == "path" else f"file://{tmp_path}"


def _round_trip(root: str) -> None:
    folder = storage.join(root, "run")
    assert not storage.exists(folder) and storage.list_files(folder) == []
    storage.write_text(storage.join(folder, "a.txt"), "alpha")
    storage.write_bytes(storage.join(folder, "sub", "b.bin"), b"\x00\x01")
    assert storage.is_dir(folder) and storage.is_file(storage.join(folder, "a.txt"))
    assert storage.read_text(storage.join(folder, "a.txt")) == "alpha"
    assert storage.read_bytes(storage.join(folder, "sub", "b.bin")) == b"\x00\x01"
    assert storage.size(storage.join(folder, "sub", "b.bin")) == 2
    assert storage.list_files(folder) == ["a.txt"]
    assert storage.list_files(folder, recursive=True) == ["a.txt", "sub/b.bin"]
    storage.delete_tree(folder)
    assert not storage.exists(folder)
    storage.delete_tree(folder)  # nothing there: not an error


def test_local_locations_round_trip(local_root):
    _round_trip(local_root)


def test_a_uri_never_becomes_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # from_uri asks the endpoint for a bucket's region unless the URI names it
    filesystem, path = storage.resolve("s3://bucket/x/y?region=us-east-1")
    assert isinstance(filesystem, pafs.S3FileSystem) and path == "bucket/x/y"
    assert storage.join("s3://bucket/x", "y", "z.parquet") == "s3://bucket/x/y/z.parquet"
    assert storage.name("s3://bucket/x/y/") == "y"
    assert storage.parent("s3://bucket/x/y/?region=r") == "s3://bucket/x?region=r"
    assert storage.parent("s3://bucket") == "s3://bucket"
    assert not (tmp_path / "s3:").exists()


def test_a_relative_path_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    filesystem, path = storage.resolve("datasets/x")
    assert isinstance(filesystem, pafs.LocalFileSystem)
    assert path == str(tmp_path / "datasets" / "x")
    assert storage.resolve(f"file://{tmp_path}/a/../b")[1] == str(tmp_path / "b")
    assert storage.is_local("datasets/x") and storage.is_local(f"file://{tmp_path}")


def test_an_unknown_scheme_is_a_one_line_user_error():
    with pytest.raises(UserError, match=r"^nosuch://bucket/: not a storage location \(") as error:
        storage.exists("nosuch://bucket/x")
    assert "\n" not in str(error.value)


def test_reading_a_missing_file_says_where(tmp_path):
    with pytest.raises(storage.StorageError, match=r"missing.txt: cannot read: no such file"):
        storage.read_text(tmp_path / "missing.txt")


def test_copy_tree_copies_a_folder_both_ways(local_root, tmp_path):
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f.txt").write_text("x")
    storage.copy_tree(source, storage.join(local_root, "copy"))
    storage.copy_tree(storage.join(local_root, "copy"), tmp_path / "back")
    assert (tmp_path / "back" / "sub" / "f.txt").read_text() == "x"


def _commit_protocol(folder: str) -> None:
    storage.begin_write(folder)
    storage.write_text(storage.join(folder, "a.txt"), "alpha")
    storage.write_text(storage.join(folder, "sub", "b.txt"), "beta")
    assert storage.interrupted_write(folder)
    with pytest.raises(storage.StorageError, match=r"not a committed folder .*interrupted"):
        storage.read_commit(folder)
    records = storage.commit(folder, {"kind": "test"})
    assert [(r.path, r.bytes) for r in records] == [("a.txt", 5), ("sub/b.txt", 4)]
    assert not storage.interrupted_write(folder)
    assert storage.read_commit(folder)["kind"] == "test"

    storage.write_text(storage.join(folder, "sub", "b.txt"), "BETA")  # same size
    with pytest.raises(storage.StorageError, match=r"b.txt: its content differs"):
        storage.read_commit(folder)
    storage.read_commit(folder, full_hash=False)  # sizes alone cannot see it
    storage.write_text(storage.join(folder, "c.txt"), "late")
    with pytest.raises(storage.StorageError, match=r"c.txt: not part of the commit"):
        storage.read_commit(folder, full_hash=False)

    storage.begin_write(folder)  # a rewrite: not committed from its first step
    with pytest.raises(storage.StorageError, match=r"not a committed folder"):
        storage.read_commit(folder)


def test_the_commit_protocol_on_a_local_folder(local_root):
    _commit_protocol(storage.join(local_root, "committed"))


def test_s3_round_trip_commit_and_bucket_creation(s3_env, tmp_path):
    bucket = f"storage-{uuid.uuid4().hex[:8]}"
    with pytest.raises(storage.StorageError, match=rf"s3://{bucket}/x: cannot write"):
        storage.write_text(f"s3://{bucket}/x", "no bucket yet")
    storage.make_dirs(f"s3://{bucket}?allow_bucket_creation=true")
    assert storage.is_dir(f"s3://{bucket}")
    _round_trip(f"s3://{bucket}")
    _commit_protocol(f"s3://{bucket}/committed")

    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "f.txt").write_text("up")
    storage.copy_tree(local, f"s3://{bucket}/copied")
    assert storage.list_files(f"s3://{bucket}/copied", recursive=True) == ["sub/f.txt"]
    storage.copy_tree(f"s3://{bucket}/copied", tmp_path / "down")
    assert (tmp_path / "down" / "sub" / "f.txt").read_text() == "up"
    storage.delete_tree(f"s3://{bucket}")
    assert storage.list_files(f"s3://{bucket}", recursive=True) == []


def test_an_unreachable_s3_endpoint_is_a_one_line_error(monkeypatch):
    from support.s3_server import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(storage.StorageError) as error:
        storage.exists("s3://bucket/x")
    message = str(error.value)
    assert "\n" not in message and message.startswith("s3://bucket/x: cannot look up (")
    assert "AWS_ENDPOINT_URL" in message
