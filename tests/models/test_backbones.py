"""One behaviour suite run over every backbone (style.md: shared suite, planted truth elsewhere)."""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.models.backbones import (
    BACKBONES,
    Backbone,
    Factors,
    ItemPrior,
    NeuMF,
    build_backbone,
    holding_rows,
    normal_rows,
    score_all_pairwise,
)
from invlearn_ray.models.checkpoint import (
    ModelFormatError,
    load_model,
    read_model_description,
    save_model,
)

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
    with pytest.raises(ModelFormatError, match="not a saved model"):
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


# ---------------------------------------------------------------------------------------------
# Catalogue scoring: the factorized contract and NeuMF's per-side precomputation
# ---------------------------------------------------------------------------------------------

FACTORIZED = ("biased_mf", "gmf", "lightgcn", "mf")


def dyadic_(model: Backbone, seed: int = 0) -> Backbone:
    """Parameters on a coarse dyadic grid: every sum and product is exact in float32, so two
    scoring paths must agree bit for bit, ties included."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            grid = torch.randint(-4, 5, parameter.shape, generator=generator)
            parameter.copy_(grid.to(parameter.dtype) / 4)
    return model


def test_factorized_backbones_score_every_item_as_their_forward():
    users, items = all_pairs()
    for name in FACTORIZED:
        model = dyadic_(make_backbone(name)) if name != "lightgcn" else make_backbone(name)
        factors = model.factors()
        assert factors is not None, name
        scores = factors.scores(torch.arange(N_USERS)).reshape(-1)
        if name == "lightgcn":  # propagation divides by degrees: equal up to float rounding
            torch.testing.assert_close(scores, model(users, items), rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(scores, model(users, items)), name


def test_gmf_folds_its_head_weight_and_bias_into_the_factors():
    model = dyadic_(make_backbone("gmf"))
    with torch.no_grad():
        model.predict_bias.fill_(0.75)
    factors = model.factors()
    assert factors.constant == 0.75
    torch.testing.assert_close(factors.user, model.user_embedding * model.predict_weight)


def test_augmented_columns_fold_a_biased_mf_into_one_dot_product():
    # The contract biased MF (issue 13) uses: mu + b_u + b_i + <p_u, q_i>.
    generator = torch.Generator().manual_seed(0)
    p, q = (
        torch.randn(N_USERS, 4, generator=generator),
        torch.randn(N_ITEMS, 4, generator=generator),
    )
    b_user, b_item, mu = torch.randn(N_USERS, generator=generator), torch.randn(N_ITEMS), 0.3
    ones_u, ones_i = torch.ones(N_USERS, 1), torch.ones(N_ITEMS, 1)
    factors = Factors(
        torch.cat([p, b_user[:, None], ones_u], 1), torch.cat([q, ones_i, b_item[:, None]], 1), mu
    )
    expected = mu + b_user[:, None] + b_item[None, :] + p @ q.T
    torch.testing.assert_close(factors.scores(torch.arange(N_USERS)), expected)


def test_biased_mf_scores_global_user_and_item_biases_plus_the_dot_product():
    model = dyadic_(make_backbone("biased_mf"))
    users, items = all_pairs()
    p, q = model.user_embedding[users], model.item_embedding[items]
    expected = (
        model.global_bias + model.user_bias[users, 0] + model.item_bias[items, 0] + (p * q).sum(-1)
    )
    assert torch.equal(model(users, items), expected)
    factors = model.factors()
    assert factors.constant == model.global_bias.item()
    assert torch.equal(factors.scores(torch.arange(N_USERS)).reshape(-1), expected)


def test_biased_mf_starts_with_zero_biases():
    model = make_backbone("biased_mf")
    assert not model.user_bias.any() and not model.item_bias.any() and not model.global_bias.any()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_init_scale_multiplies_every_embedding_tables_initial_spread(name):
    def spread(init_scale: float) -> dict[str, float]:
        torch.manual_seed(0)
        extra = {}
        if name == "lightgcn":
            extra = {"graph_users": torch.tensor([0, 1]), "graph_items": torch.tensor([1, 2])}
        model = build_backbone(name, 200, 300, embedding_dim=8, init_scale=init_scale, **extra)
        # Bias tables start at zero whatever the scale; factor tables carry the spread.
        return {
            t: float(getattr(model, t).detach().std()) for t in model.table_names if "bias" not in t
        }

    base, scaled = spread(1.0), spread(10.0)
    for table, std in base.items():
        assert std > 0 and scaled[table] == pytest.approx(10 * std, rel=1e-5), table


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_a_non_positive_init_scale_is_an_error(name):
    graph = {"graph_users": torch.tensor([0]), "graph_items": torch.tensor([0])}
    extra = graph if name == "lightgcn" else {}
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        build_backbone(name, 3, 3, init_scale=0.0, **extra)


def test_item_prior_scores_every_user_by_the_item_logit_and_round_trips(tmp_path):
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    model = ItemPrior(3, 4, logits)
    assert not list(model.parameters())
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([3, 2, 1, 0])
    assert torch.equal(model(users, items), logits[items])
    assert torch.equal(model.score_all(torch.tensor([0, 2])), logits.expand(2, 4))
    save_model(model, tmp_path / "model")
    assert torch.equal(load_model(tmp_path / "model").score_all(torch.tensor([1])), logits[None])


def test_neumf_is_not_factorized_and_its_scorer_equals_the_pairwise_forward():
    model = make_backbone("neumf")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)  # large enough that every ReLU is sometimes active
    assert model.factors() is None
    users = torch.tensor([3, 0, 12, 3])
    for pair_budget in (1, 7, 1 << 16):
        torch.testing.assert_close(
            model.catalogue_scorer(pair_budget)(users),
            score_all_pairwise(model, users),
            rtol=1e-5,
            atol=1e-5,
        )


def test_a_scorer_may_reuse_its_buffer_but_score_all_returns_its_own_tensor(backbone):
    first = backbone.score_all(torch.tensor([0, 1]))
    kept = first.clone()
    backbone.score_all(torch.tensor([2, 3]))
    assert torch.equal(first, kept)


@pytest.mark.parametrize("name", FACTORIZED)
def test_factors_score_pairs_as_the_forward(name):
    model = make_backbone(name)
    users, items = all_pairs()
    torch.testing.assert_close(model.factors().pair_scores(users, items), model(users, items))


@pytest.mark.parametrize("dim", [1, 8, 32])
def test_held_rows_are_the_whole_tables_rows_and_leave_the_generator_where_it_would(dim):
    rows = 1001
    torch.manual_seed(5)
    whole, after = torch.randn(rows, dim), torch.rand(4)
    for start, stop in ((0, 501), (501, 1001), (1000, 1001), (1001, 1001)):
        torch.manual_seed(5)
        held = normal_rows(rows, dim, start, stop, chunk=96)
        assert torch.equal(held, whole[start:stop])
        assert torch.equal(torch.rand(4), after)


def test_a_backbone_built_holding_rows_starts_from_the_one_process_models_rows():
    torch.manual_seed(0)
    whole = NeuMF(37, 53, embedding_dim=8, mlp_layers=2)
    torch.manual_seed(0)
    with holding_rows(lambda rows: (rows // 2, rows)):
        half = NeuMF(37, 53, embedding_dim=8, mlp_layers=2)
    for name, param in whole.named_parameters():
        if name in whole.table_names:
            assert torch.equal(getattr(half, name), param[len(param) // 2 :]), name
        else:
            assert torch.equal(getattr(half, name), param), name
