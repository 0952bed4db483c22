"""Run diagnostics: IG's direction log per epoch, the fixed unlabeled sample, IDL histograms."""

from __future__ import annotations

import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.models.backbones import build_backbone
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.diagnostics import WEIGHT_BINS, DirectionLog, UnlabeledDiagnostics


def test_each_epochs_choices_are_counted_and_tagged_with_the_epoch():
    log = DirectionLog()
    for choice in (0, 2, 2):
        log.add(torch.tensor(choice), torch.rand(3))
    assert log.end_epoch(0) == {"none_steps": 1, "direct_steps": 0, "inverse_steps": 2}
    assert log.end_epoch(1) == {}  # a warm-up epoch: no meta steps
    log.add(torch.tensor(1), torch.rand(3))
    restored = DirectionLog()
    restored.load_state_dict(log.state_dict())
    assert restored.end_epoch(2) == {"none_steps": 0, "direct_steps": 1, "inverse_steps": 0}
    saved = restored.tensors()
    assert saved["epoch"].tolist() == [0, 0, 0, 2] and saved["choice"].tolist() == [0, 2, 2, 1]
    assert saved["losses"].shape == (4, 3)


def test_the_diagnostic_sample_is_seeded_and_histograms_are_kept_for_idl_methods_only():
    data = make_synthetic_recdata(SyntheticConfig(n_users=40, n_items=60, dim=4, seed=1))
    model = build_backbone("gmf", n_users=data.n_users, n_items=data.n_items, embedding_dim=4)
    idl = UnlabeledDiagnostics(TrainConfig(method="idl", seed=3), data, torch.device("cpu"))
    again = UnlabeledDiagnostics(TrainConfig(method="ns", seed=3), data, torch.device("cpu"))
    assert torch.equal(idl.rows["sampled_items"], again.rows["sampled_items"])
    annotation = idl.end_epoch(0, model)
    assert 0 <= annotation["sampled_accuracy"] <= 1
    assert idl.weight_histograms[0].shape == (WEIGHT_BINS,)
    assert idl.weight_histograms[0].sum() == len(idl.rows["sampled_users"]) + len(
        idl.rows["observed_users"]
    )
    again.end_epoch(0, model)
    assert again.weight_histograms == {}
