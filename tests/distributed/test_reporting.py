"""Checkpoints of one process (no Ray cluster: a checkpoint is a folder and a filesystem)."""

from __future__ import annotations

import shutil

import pyarrow.fs
import pytest
import ray.train
import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.reporting import (
    CheckpointMismatchError,
    CheckpointSink,
    restore_state,
)
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

CONFIG = TrainConfig(backbone="gmf", embedding_dim=8, epochs=1, batch_size=32, test_batch_size=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[ray.train.Checkpoint, dict]:
    """A one-process trainer's checkpoint after one epoch, and its state."""
    folder = tmp_path_factory.mktemp("checkpoint")
    trainer = Trainer(CONFIG, make_synthetic_recdata(SyntheticConfig.preset("tiny")))
    record = trainer.run_epoch(0)

    def keep(metrics: dict, checkpoint: ray.train.Checkpoint) -> None:
        shutil.copytree(checkpoint.path, folder, dirs_exist_ok=True)  # as Ray Train's upload

    CheckpointSink(keep).report(record, trainer)
    return ray.train.Checkpoint.from_directory(str(folder)), trainer.state_dict()


def test_an_unsharded_checkpoint_restores_the_trainer_state(checkpoint):
    folder, state = checkpoint
    restored = restore_state(folder, CONFIG, world_size=1)
    assert torch.equal(restored["model"]["item_embedding"], state["model"]["item_embedding"])
    assert restored["next_epoch"] == state["next_epoch"] == 1


def test_a_checkpoint_on_a_remote_filesystem_is_read_whole_and_restores_the_same(checkpoint):
    folder, state = checkpoint
    # Not a LocalFileSystem: the path an object store's checkpoint takes.
    remote = pyarrow.fs.SubTreeFileSystem(folder.path, pyarrow.fs.LocalFileSystem())
    restored = restore_state(ray.train.Checkpoint("", filesystem=remote), CONFIG, world_size=1)
    assert torch.equal(restored["model"]["item_embedding"], state["model"]["item_embedding"])


def test_another_worker_count_is_refused_in_one_line(checkpoint):
    folder, _ = checkpoint
    with pytest.raises(CheckpointMismatchError, match=r"\(1 workers, not 2\); resume") as error:
        restore_state(folder, CONFIG, world_size=2)
    assert "\n" not in str(error.value)
