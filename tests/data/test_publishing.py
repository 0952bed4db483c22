"""Folders published whole, and what a hard crash leaves behind removed a day later."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from invlearn_ray.data import publishing
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.synthetic import SyntheticConfig

DAY = 24 * 3600


def _age(folder: Path, seconds: float) -> None:
    """Set the modification time of ``folder`` and everything in it ``seconds`` back."""
    then = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))


def _leftover(parent: Path, name: str, age_seconds: float) -> Path:
    folder = parent / name
    (folder / "valid").mkdir(parents=True)
    (folder / "valid" / "part-00000-of-00001.parquet").write_bytes(b"half a file")
    _age(folder, age_seconds)
    return folder


def test_publish_replaces_the_destination_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging = publishing.new_staging_dir(out)
    (staging / "new.txt").write_text("new")
    publishing.publish(staging, out)
    assert sorted(path.name for path in out.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_leftovers_older_than_a_day_are_removed_with_a_message(tmp_path, caplog):
    stale = _leftover(tmp_path, ".ml100k.staging-0123456789ab", 2 * DAY)
    retired = _leftover(tmp_path, ".ml100k.replaced-0123456789ab", 2 * DAY)
    with caplog.at_level(logging.WARNING, logger=publishing.__name__):
        removed = publishing.remove_stale(tmp_path)
    assert removed == [retired, stale] and not stale.exists() and not retired.exists()
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        f"removed {retired}",
        f"removed {stale}",
    ]
    assert "2.0 days ago" in caplog.records[0].getMessage()


def test_recent_leftovers_and_other_folders_are_kept(tmp_path):
    recent = _leftover(tmp_path, ".ml100k.staging-0123456789ab", DAY / 2)
    # A write in progress: the folder itself is old, a file inside it was just written.
    writing = _leftover(tmp_path, ".other.staging-0123456789ab", 3 * DAY)
    (writing / "valid" / "part-00001-of-00002.parquet").write_bytes(b"new")
    ray_run = _leftover(tmp_path, ".run.staging", 3 * DAY)  # resumable Ray Train checkpoints
    dataset = _leftover(tmp_path, "ml100k", 3 * DAY)
    assert publishing.remove_stale(tmp_path) == []
    assert all(path.exists() for path in (recent, writing, ray_run, dataset))


def test_a_build_removes_stale_staging_folders_beside_its_output(tmp_path, caplog):
    stale = _leftover(tmp_path, ".tiny.staging-0123456789ab", 2 * DAY)
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    with caplog.at_level(logging.WARNING, logger=publishing.__name__):
        build_dataset_in_memory(BuildConfig(source=source), tmp_path / "tiny")
    assert not stale.exists()
    assert f"removed {stale}" in caplog.text
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny"]
