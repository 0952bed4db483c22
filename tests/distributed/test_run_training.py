"""run_training without Ray: argument checks, the run-folder guards, publishing, the layout."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.train import run_training
from invlearn_ray.evaluation.evaluate import evaluate_split
from invlearn_ray.models.checkpoint import load_model
from invlearn_ray.training import run_folder as run_dir
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import (
    RUN_DESCRIPTION_FILE,
    RunConflictError,
    RunExistsError,
    claim_run_dir,
    staging_dir,
)

CONFIG = TrainConfig(method="ig", embedding_dim=8, epochs=2, batch_size=64, test_batch_size=16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_training") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), out)
    return out


@pytest.fixture(scope="module")
def single_process_run(dataset, tmp_path_factory) -> dict:
    return run_training(dataset, CONFIG, num_workers=0, output_dir=tmp_path_factory.mktemp("run"))


def test_the_model_folder_is_self_contained(dataset, single_process_run):
    model_dir = Path(single_process_run["output_dir"]) / "model"
    data = load_dataset(dataset)
    for kind in ("users", "items"):
        saved = pq.read_table(model_dir / "id_map" / f"{kind}.parquet")
        assert saved.equals(pq.read_table(dataset / "id_map" / f"{kind}.parquet"))
    seen = torch.load(model_dir / "seen_items.pt", weights_only=True)
    assert torch.equal(seen["indptr"], data.seen_in_training.indptr)
    assert torch.equal(seen["items"], data.seen_in_training.items)
    description = json.loads((model_dir / "model.json").read_text())
    assert description["metadata"]["method"] == "ig"
    assert description["metadata"]["best_epoch"] == single_process_run["best_epoch"]


def test_the_saved_model_is_the_selected_one(dataset, single_process_run):
    model = load_model(Path(single_process_run["output_dir"]) / "model")
    valid = evaluate_split(model, load_dataset(dataset).valid)
    assert valid["gauc"] == pytest.approx(single_process_run["valid"]["gauc"], abs=1e-12)


def test_metrics_and_direction_log_are_written(single_process_run):
    out = Path(single_process_run["output_dir"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workers"] == 0 and metrics["config"] == CONFIG.to_dict()
    assert [record["epoch"] for record in metrics["history"]] == [0, 1]
    log = torch.load(out / "direction_log.pt", weights_only=True)["direction_log"]
    steps = sum(record["ig/direct_steps"] for record in metrics["history"])
    assert int((log["choice"] == 1).sum()) == steps
    assert log["losses"].shape == (len(log["choice"]), 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0"),
        ({"test_switches": {"_test_fail_at": 1}}, ValueError, "unknown test switch"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(dataset, tmp_path, kwargs, error, message):
    arguments = {"num_workers": 2, "output_dir": tmp_path / "out", **kwargs}
    with pytest.raises(error, match=message):
        run_training(dataset, CONFIG, **arguments)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    with pytest.raises(DatasetFormatError, match="not a built dataset"):
        run_training(tmp_path, CONFIG, num_workers=2, output_dir=tmp_path / "out")


def test_a_run_folder_of_another_run_is_refused_before_ray_starts(dataset, tmp_path):
    out = tmp_path / "out"
    other = {"dataset": str(dataset), "train": CONFIG.replace(lr=0.5).to_dict(), "num_workers": 2}
    claim_run_dir(staging_dir(out) / "ray" / "out", other)
    with pytest.raises(RunConflictError, match=r"differing in \['train.lr'\]"):
        run_training(dataset, CONFIG, num_workers=2, output_dir=out)


def test_the_same_run_may_reclaim_its_folder(tmp_path):
    description = {"dataset": "d", "train": CONFIG.to_dict(), "num_workers": 2}
    claim_run_dir(tmp_path, description)
    claim_run_dir(tmp_path, description)
    assert json.loads((tmp_path / RUN_DESCRIPTION_FILE).read_text()) == description
    with pytest.raises(RunConflictError, match=r"differing in \['num_workers'\]"):
        claim_run_dir(tmp_path, {**description, "num_workers": 3})


def test_a_storage_path_inside_the_output_folder_is_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="lies inside the output folder"):
        run_training(
            dataset, CONFIG, num_workers=2, output_dir=tmp_path, storage_path=tmp_path / "ckpt"
        )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


FAST = CONFIG.replace(method="none", epochs=1)


def test_a_finished_run_is_refused_unchanged_and_replaced_only_with_overwrite(dataset, tmp_path):
    out = tmp_path / "base"
    run_training(dataset, FAST, num_workers=0, output_dir=out)
    before = _files(out)
    other = FAST.replace(backbone="neumf")
    message = f"^{out} already holds a finished run; pass --overwrite to replace it"
    with pytest.raises(RunExistsError, match=message):
        run_training(dataset, other, num_workers=0, output_dir=out)
    assert _files(out) == before
    run_training(dataset, other, num_workers=0, output_dir=out, overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["config"]["backbone"] == "neumf"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base"]


def test_a_crash_after_the_model_is_written_leaves_the_previous_run_intact(
    dataset, tmp_path, monkeypatch
):
    out = tmp_path / "base"
    run_training(dataset, FAST, num_workers=0, output_dir=out)
    before = _files(out)
    save_model = run_dir.save_model

    def save_then_crash(*args, **kwargs):
        save_model(*args, **kwargs)
        raise RuntimeError("crash after the model is written")

    monkeypatch.setattr(run_dir, "save_model", save_then_crash)
    with pytest.raises(RuntimeError, match="crash after the model"):
        run_training(dataset, FAST.replace(seed=1), num_workers=0, output_dir=out, overwrite=True)
    assert _files(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base"]
