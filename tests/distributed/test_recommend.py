"""Top-K recommendations from a saved model, against a brute-force ranking in plain Python; and
a model in an object store (a real S3 server) refused unless committed. Recommendations from S3
into S3, on nodes that share no disk: tests/distributed/test_multinode_build.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from support.scripts import load_script

from invlearn_ray import storage
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.recdata import UserItemIndex
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.recommend import (
    OutputExistsError,
    Recommender,
    UnknownUserError,
    check_output_dir,
    recommend_to_parquet,
    top_k_unseen,
)
from invlearn_ray.distributed.train import run_training
from invlearn_ray.models.backbones import build_backbone
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import upload_run

K = 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recommend") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, shards=2, split=SplitOptions(seed=0)), out)
    return out


@pytest.fixture(scope="module")
def model_dir(dataset, tmp_path_factory) -> Path:
    config = TrainConfig(method="ns", backbone="gmf", embedding_dim=8, epochs=2, batch_size=64)
    out = tmp_path_factory.mktemp("recommend_run")
    summary = run_training(dataset, config, num_workers=0, output_dir=out)
    return Path(summary["output_dir"]) / "model"


def raw_ids(dataset: Path, kind: str) -> list[str]:
    table = pq.read_table(dataset / "id_map" / f"{kind}.parquet").sort_by("index")
    return table.column("raw_id").to_pylist()


def brute_force(dataset: Path, model_dir: Path, k: int) -> list[tuple[str, int, str]]:
    """(user, rank, item) rows: every unseen item scored one pair at a time, sorted in Python
    by (-score, item index)."""
    data = load_dataset(dataset)
    recommender = Recommender.load(model_dir)
    users, items = raw_ids(dataset, "users"), raw_ids(dataset, "items")
    rows = []
    for user in range(data.n_users):
        seen = data.seen_in_training
        trained = set(seen.items[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        scored = []
        for item in range(data.n_items):
            if item not in trained:
                logit = recommender.model(torch.tensor([user]), torch.tensor([item])).item()
                scored.append((-logit, item))
        for rank, (_, item) in enumerate(sorted(scored)[:k], start=1):
            rows.append((users[user], rank, items[item]))
    return rows


def as_rows(table) -> list[tuple[str, int, str]]:
    columns = table.to_pydict()
    return list(zip(columns["user"], columns["rank"], columns["item"], strict=True))


def test_top_k_matches_a_brute_force_ranking_without_training_items(dataset, model_dir):
    recommender = Recommender.load(model_dir)
    table = recommender.recommend(raw_ids(dataset, "users"), K)
    assert as_rows(table) == brute_force(dataset, model_dir, K)
    data = load_dataset(dataset)
    user_index = {raw: index for index, raw in enumerate(raw_ids(dataset, "users"))}
    item_index = {raw: index for index, raw in enumerate(raw_ids(dataset, "items"))}
    users = torch.tensor([user_index[u] for u in table.column("user").to_pylist()])
    items = torch.tensor([item_index[i] for i in table.column("item").to_pylist()])
    assert not data.seen_in_training.contains(users, items).any()


def test_scores_are_the_model_logits_best_first(dataset, model_dir):
    recommender = Recommender.load(model_dir)
    table = recommender.recommend(raw_ids(dataset, "users")[:3], K)
    scores = table.column("score").to_pylist()
    for start in range(0, len(scores), K):
        block = scores[start : start + K]
        assert block == sorted(block, reverse=True)


def test_users_with_fewer_unseen_items_than_k_get_only_those(dataset, model_dir):
    recommender = Recommender.load(model_dir)
    data = load_dataset(dataset)
    table = recommender.recommend(raw_ids(dataset, "users"), data.n_items)
    per_user = table.group_by("user").aggregate([("rank", "max")]).to_pydict()
    counts = dict(zip(per_user["user"], per_user["rank_max"], strict=True))
    unseen = data.n_items - data.seen_in_training.counts()
    for index, raw in enumerate(raw_ids(dataset, "users")):
        assert counts.get(raw, 0) == int(unseen[index])


def test_equal_scores_rank_by_item_index():
    model = build_backbone("mf", 2, 6, embedding_dim=4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    seen = UserItemIndex.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([1, 4, 0]), 2, 6)
    items, scores = top_k_unseen(model, torch.tensor([0, 1]), seen, k=3)
    assert items.tolist() == [[0, 2, 3], [1, 2, 3]]
    assert torch.equal(scores, torch.zeros(2, 3))


def test_unknown_user_ids_are_an_error_that_lists_them(model_dir):
    recommender = Recommender.load(model_dir)
    with pytest.raises(UnknownUserError, match=r"2 unknown user id\(s\), e.g. \['nobody', 'x9'\]"):
        recommender.recommend(["0", "nobody", "x9", "nobody"], K)


@pytest.mark.ray
def test_ray_data_batch_inference_writes_the_same_rows_as_parquet(
    ray_session, dataset, model_dir, tmp_path
):
    users = raw_ids(dataset, "users")
    out = tmp_path / "recommendations"
    n_rows = recommend_to_parquet(model_dir, out, k=K, batch_size=7, num_actors=1)

    written = pq.read_table(out).sort_by([("user", "ascending"), ("rank", "ascending")])
    expected = Recommender.load(model_dir).recommend(users, K)
    expected = expected.sort_by([("user", "ascending"), ("rank", "ascending")])
    assert n_rows == written.num_rows == expected.num_rows
    assert written.column_names == ["user", "rank", "item", "score"]
    assert as_rows(written) == as_rows(expected)
    torch.testing.assert_close(
        torch.tensor(written.column("score").to_pylist()),
        torch.tensor(expected.column("score").to_pylist()),
    )

    with pytest.raises(FileExistsError, match="overwrite"):
        recommend_to_parquet(model_dir, out, k=K, users=users[:2])
    with pytest.raises(UnknownUserError, match="nobody"):
        recommend_to_parquet(model_dir, tmp_path / "other", k=K, users=["nobody"])
    assert recommend_to_parquet(model_dir, out, k=2, users=users[:3], overwrite=True) == 6
    # Written beside and swapped in whole: no staging or retired folder is left behind.
    assert pq.read_table(out).num_rows == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["recommendations"]


def load_recommend_cli():
    return load_script("pipelines/recommend.py", "recommend_cli")


@pytest.fixture
def s3_run(s3_env, model_dir) -> str:
    """The local run, uploaded to S3 as an object-store run is (files, then its commit)."""
    run = storage.join(s3_env.create_bucket(f"recs-{uuid.uuid4().hex[:8]}"), "run")
    upload_run(model_dir.parent, run)
    return run


def test_an_object_store_model_outside_a_committed_run_or_a_bad_uri_is_one_line(s3_run, capsys):
    """Refused before Ray starts: no scoring, nothing written."""
    cli = load_recommend_cli()
    for model, message in [
        ("nosuch://bucket/run", "--model nosuch://bucket/: not a storage location"),
        ("s3://no-such-bucket/run", "--model s3://no-such-bucket/"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--model", model])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and error.count("\n") == 1, error

    inside = storage.join(s3_run, "recs")
    assert cli.main(["--model", s3_run, "--out", inside]) == 1
    assert f"{inside} lies inside the committed run {s3_run}" in capsys.readouterr().err

    storage.delete_file(storage.join(s3_run, storage.COMMIT_FILE))  # as mid-upload
    assert cli.main(["--model", s3_run, "--out", f"{s3_run}.recs"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{s3_run}: not a committed folder" in error
    assert not storage.exists(f"{s3_run}.recs")


def test_an_output_is_replaced_only_when_asked_or_left_by_an_interrupted_write(tmp_path):
    out = tmp_path / "recs"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"rows")
    (out / storage.WRITING_MARKER).write_bytes(b"")
    check_output_dir(out, overwrite=False)  # a write of ours that never committed
    (out / storage.COMMIT_FILE).write_text("{}")
    with pytest.raises(OutputExistsError, match="already holds recommendations"):
        check_output_dir(out, overwrite=False)
    check_output_dir(out, overwrite=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"other than Parquet \(\['notes.txt'\]\)"):
        check_output_dir(out, overwrite=True)
