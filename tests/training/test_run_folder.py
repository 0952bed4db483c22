"""Publishing a run folder: whole or not at all, finished runs replaced only when asked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from invlearn_ray.training.run_folder import (
    METRICS_FILE,
    MODEL_DIR,
    RunExistsError,
    check_can_publish,
    publish_run,
    remove_stale_runs,
    staging_dir,
)


def _run(folder: Path, tag: str) -> Path:
    """A stand-in run folder: a model file and metrics.json holding ``tag``."""
    (folder / MODEL_DIR).mkdir(parents=True)
    (folder / MODEL_DIR / "model.pt").write_text(tag)
    (folder / METRICS_FILE).write_text(tag)
    return folder


def test_the_staging_folder_is_hidden_beside_the_output_folder_and_fixed(tmp_path):
    assert staging_dir(tmp_path / "run") == tmp_path / ".run.staging"


def test_a_new_run_appears_whole_and_leaves_no_hidden_folders(tmp_path):
    out = tmp_path / "run"
    publish_run(_run(staging_dir(out), "new"), out)
    assert (out / METRICS_FILE).read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["run"]


def test_a_finished_run_is_refused_unless_overwrite(tmp_path):
    out = _run(tmp_path / "run", "old")
    with pytest.raises(RunExistsError, match=r"run already holds a finished run; pass --overwrite"):
        check_can_publish(out, overwrite=False)
    check_can_publish(out, overwrite=True)
    check_can_publish(tmp_path / "new", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunExistsError, match="is a file, not a run folder"):
        check_can_publish(tmp_path / "file", overwrite=True)


def test_an_overwritten_run_is_retired_whole_except_the_inputs_the_new_run_read(tmp_path):
    out = _run(tmp_path / "run", "old")
    (out / "recommendations").mkdir()
    (out / "dataset").mkdir()
    (out / "dataset" / "manifest.json").write_text("{}")
    publish_run(_run(staging_dir(out), "new"), out, inputs=[out / "dataset"])
    assert (out / MODEL_DIR / "model.pt").read_text() == "new"
    assert sorted(path.name for path in out.iterdir()) == ["dataset", METRICS_FILE, MODEL_DIR]
    assert [path.name for path in tmp_path.iterdir()] == ["run"]


def test_what_an_unfinished_folder_holds_moves_into_the_new_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / MODEL_DIR).mkdir()
    (out / MODEL_DIR / "model.pt").write_text("half-written")
    publish_run(_run(staging_dir(out), "new"), out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / MODEL_DIR / "model.pt").read_text() == "new"


def _aged(folder: Path, days: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    then = time.time() - days * 24 * 3600
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))
    return folder


def test_day_old_leftovers_beside_run_folders_go_but_resumable_checkpoints_stay(tmp_path):
    abandoned = _aged(tmp_path / ".one-process.staging", days=2)
    retired = _aged(tmp_path / ".base.replaced-0123456789ab", days=2)
    resumable = tmp_path / ".ray-run.staging"
    _aged(resumable / "ray" / "ray-run", days=2)
    recent = _aged(tmp_path / ".today.staging", days=0.5)
    assert remove_stale_runs(tmp_path) == [retired, abandoned]
    assert resumable.is_dir() and recent.is_dir()
