"""Model selection: the best validation epoch's weights kept, early stopping, resumable."""

from __future__ import annotations

import torch

from invlearn_ray.models.backbones import build_backbone
from invlearn_ray.training.selection import ModelSelection


def _model(fill: float):
    model = build_backbone("mf", n_users=3, n_items=4, embedding_dim=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(fill)
    return model


def test_the_best_epochs_weights_are_kept_and_later_worse_epochs_are_not():
    selection = ModelSelection("gauc", patience=5, max_epochs=10)
    for epoch, (score, fill) in enumerate([(0.6, 1.0), (0.7, 2.0), (0.65, 3.0)]):
        selection.update(epoch, {"gauc": score}, _model(fill))
    assert (selection.best_epoch, selection.best_score) == (1, 0.7)
    selected = selection.selected(_model(3.0))
    assert all(torch.all(p == 2.0) for p in selected.parameters()) and not selected.training


def test_the_run_stops_after_patience_epochs_without_a_gain_or_at_max_epochs():
    selection = ModelSelection("gauc", patience=1, max_epochs=10)
    for epoch, score in enumerate([0.7, 0.6]):
        selection.update(epoch, {"gauc": score}, _model(0.0))
    assert not selection.should_stop(next_epoch=2)
    selection.update(2, {"gauc": 0.6}, _model(0.0))
    assert selection.should_stop(next_epoch=3)
    assert ModelSelection("gauc", patience=5, max_epochs=3).should_stop(next_epoch=3)


def test_a_restored_selection_continues_the_count():
    selection = ModelSelection("gauc", patience=1, max_epochs=10)
    for epoch, score in enumerate([0.7, 0.6]):
        selection.update(epoch, {"gauc": score}, _model(float(epoch)))
    restored = ModelSelection("gauc", patience=1, max_epochs=10)
    restored.load_state_dict(selection.state_dict())
    restored.update(2, {"gauc": 0.5}, _model(2.0))
    assert restored.should_stop(next_epoch=3) and restored.best_epoch == 0
