"""One behaviour suite run over every backbone (style.md: shared suite, planted truth elsewhere)."""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.core.backbones import BACKBONES, Backbone, build_backbone
from invlearn_ray.core.checkpoint import load_model, read_model_description, save_model

N_USERS, N_ITEMS = 13, 17


def make_backbone(name: str, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    extra = {}
    if name == "lightgcn":
        generator = torch.Generator().manual_seed(seed)
        extra = {
            "graph_users": torch.randint(0, N_USERS, (40,), generator=generator),
            "graph_items": torch.randint(0, N_ITEMS, (40,), generator=generator),
        }
    return build_backbone(name, N_USERS, N_ITEMS, embedding_dim=8, **extra)


def all_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.arange(N_USERS).repeat_interleave(N_ITEMS)
    items = torch.arange(N_ITEMS).repeat(N_USERS)
    return users, items


@pytest.fixture(params=sorted(BACKBONES))
def backbone(request) -> Backbone:
    return make_backbone(request.param)


def test_forward_returns_one_finite_logit_per_pair(backbone):
    users, items = all_pairs()
    logits = backbone(users, items)
    assert logits.shape == (len(users),)
    assert torch.isfinite(logits).all()


def test_scoring_in_one_batch_equals_scoring_row_by_row(backbone):
    users, items = all_pairs()
    batched = backbone(users, items)
    single = torch.stack([backbone(users[k : k + 1], items[k : k + 1])[0] for k in range(0, 60)])
    torch.testing.assert_close(batched[:60], single)


def test_score_all_matches_pairwise_forward(backbone):
    users = torch.tensor([0, 5, 12, 5])
    full = backbone.score_all(users)
    pairwise = backbone(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(4))
    torch.testing.assert_close(full, pairwise.view(4, N_ITEMS), rtol=1e-5, atol=1e-6)


def test_representations_are_linear_in_the_embedding_tables(backbone):
    # Inverse Gradient evaluates θ + c·α·s from gathered rows; that is exact only if this holds.
    users, items = all_pairs()
    params = backbone.params()
    direction = {name: torch.randn_like(params[name]) for name in backbone.table_names}
    shifted = dict(params)
    for name in backbone.table_names:
        shifted[name] = params[name] + 0.3 * direction[name]
    expected = backbone.representations(users, items, shifted)
    base = backbone.representations(users, items, params)
    along = backbone.representations(users, items, direction)
    for got_base, got_along, want in zip(base, along, expected, strict=True):
        torch.testing.assert_close(got_base + 0.3 * got_along, want, rtol=1e-5, atol=1e-6)


def test_head_names_and_table_names_partition_the_parameters(backbone):
    names = set(backbone.params())
    assert set(backbone.table_names) | set(backbone.head_names()) == names
    assert not set(backbone.table_names) & set(backbone.head_names())


def test_save_then_load_gives_identical_scores(backbone, tmp_path):
    save_model(backbone, tmp_path / "model", metadata={"method": "ns", "epoch": 3})
    restored = load_model(tmp_path / "model")
    users, items = all_pairs()
    torch.testing.assert_close(restored(users, items), backbone(users, items), rtol=0, atol=0)
    assert read_model_description(tmp_path / "model")["metadata"] == {"method": "ns", "epoch": 3}


def test_saved_weights_load_without_pickle(backbone, tmp_path):
    save_model(backbone, tmp_path / "model")
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert set(state) == set(backbone.state_dict())


def test_gradients_reach_every_parameter(backbone):
    users, items = all_pairs()
    backbone(users, items).sum().backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_unknown_backbone_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid names"):
        build_backbone("ncf", 3, 3)


def test_loading_a_directory_that_is_not_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved model"):
        load_model(tmp_path)


def test_lightgcn_cache_is_invalidated_by_an_optimizer_step():
    model = make_backbone("lightgcn")
    users = torch.arange(N_USERS)
    before = model.score_all(users)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(users, torch.zeros_like(users)).sum().backward()
    optimizer.step()
    after = model.score_all(users)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after[:, 0], model(users, torch.zeros_like(users)).detach())


def test_lightgcn_cache_is_invalidated_by_loading_weights():
    model = make_backbone("lightgcn", seed=0)
    other = make_backbone("lightgcn", seed=1)
    users = torch.arange(N_USERS)
    model.score_all(users)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.score_all(users), model.score_all(users))


def test_lightgcn_without_a_graph_is_a_clear_error():
    with pytest.raises(ValueError, match="training-positive graph"):
        build_backbone("lightgcn", 3, 3)
