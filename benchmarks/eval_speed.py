"""Evaluation's share of a training run, before and after bounded full-catalogue ranking.

For each backbone the script trains two IG epochs with the product's own ``Trainer`` (the
second, steady-state one is reported) and times what a run spends evaluating: validation after
every epoch (AUC/GAUC/NDCG/MRR on the valid split plus annotation diagnostics —
``EpochRecord.eval_seconds``) and ``Trainer.result()`` once (the same row metrics on test, the
full-catalogue Recall/NDCG@20 and annotation). It prints evaluation's share of the run's wall
time for a 1-epoch run (the hardest case: the test ranking is paid once, training once) and for
a 10-epoch run (computed from the same measured epoch).

*Before* is main@5bf7e64's evaluation, reproduced here: its full ranking
(:func:`dense_full_ranking`: two dense ``B × n_items`` boolean masks per user batch,
``masked_fill``, ``topk`` and full-width passes for ties, over ``Backbone.score_all`` — a matrix
product for MF/GMF/LightGCN, every pair through the forward for NeuMF, today's
:func:`score_all_pairwise`) and its per-epoch scoring (:func:`old_validation`: the forward over
the valid rows in 65k-row batches, the diagnostic rows scored twice). Its rankings are checked
to equal the new path's. Where an exact ranking would take too long (``--before-users`` for
main's path, ``--neumf-users`` for both of NeuMF's) the first users are ranked and the time is
scaled to all of them (the cost is linear in users; the printout says so).

Sizes:

* ``ml1m`` — the synthetic ``ml1m_scale`` preset (6,000 × 4,000, ~200 k training rows);
* ``micro_video`` — the paper's Micro-Video shape, 37,692 users × 131,690 items: a random log
  of ~9.5 M labeled rows (log-normal user activity, Zipf item popularity, 40 % positives) split
  60/20/20 into ~5.7 M training, ~1.9 M valid and ~1.9 M test rows. The IG epochs of the
  backbones in ``--estimate`` are timed over ``--train-steps`` steps and scaled to the epoch
  (marked "est."): LightGCN propagates the whole graph every step, and NeuMF's Adam step over its
  27 M parameters makes an epoch take minutes here.

Usage (the machine is shared: read ratios measured in one run)::

    python benchmarks/eval_speed.py --size ml1m
    python benchmarks/eval_speed.py --size micro_video --before-users 2048 --neumf-users 128 \
        --estimate lightgcn,neumf
    python benchmarks/eval_speed.py --smoke-test
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.data.build import make_synthetic_recdata  # noqa: E402
from invlearn_ray.data.hashing import hash_uniform  # noqa: E402
from invlearn_ray.data.recdata import (  # noqa: E402
    Interactions,
    ObservedUnlabeled,
    RecData,
    UserItemIndex,
)
from invlearn_ray.data.synthetic import SyntheticConfig  # noqa: E402
from invlearn_ray.evaluation.evaluate import evaluate_full_ranking  # noqa: E402
from invlearn_ray.evaluation.metrics import discount_cumsum, evaluate_rows  # noqa: E402
from invlearn_ray.models.backbones import Backbone, score_all_pairwise  # noqa: E402
from invlearn_ray.training.batches import BatchSource, EpochPlan  # noqa: E402
from invlearn_ray.training.config import TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer, training_rows  # noqa: E402

MICRO_VIDEO = {"n_users": 37_692, "n_items": 131_690, "rows": 9_462_492}
RUN_EPOCHS = (1, 10)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def micro_video_like(n_users: int, n_items: int, rows: int, seed: int = 0) -> RecData:
    """A random labeled log of the given shape, split 60/20/20 by a hash of (user, item).

    Log-normal rows per user (at least 5) and Zipf(1) item popularity, so seen lists and
    targets are as uneven as in real logs; pairs are distinct; 40 % of rows are positive.
    """
    generator = torch.Generator().manual_seed(seed)
    activity = torch.exp(torch.randn(n_users, generator=generator))
    per_user = (activity / activity.sum() * (rows - 5 * n_users)).floor().long() + 5
    popularity = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64)
    item_order = torch.randperm(n_items, generator=generator)
    users = torch.repeat_interleave(torch.arange(n_users), per_user)
    keys = users.new_empty(0)
    while len(keys) < rows:  # repeated pairs of heavy users and popular items are redrawn
        drawn = torch.multinomial(popularity, len(users), replacement=True, generator=generator)
        keys = torch.unique(torch.cat([keys, users * n_items + item_order[drawn]]))
    keys = keys[torch.randperm(len(keys), generator=generator)[:rows]].sort().values
    users, items = keys // n_items, keys % n_items
    labels = (torch.rand(len(keys), generator=generator) < 0.4).float()
    fate = hash_uniform(seed, 1, users, items)
    train, valid = fate < 0.6, (fate >= 0.6) & (fate < 0.8)
    test = fate >= 0.8
    judge = train & (hash_uniform(seed, 2, users, items) < 0.1)

    def take(mask: torch.Tensor) -> Interactions:
        return Interactions(users[mask], items[mask], labels[mask])

    return RecData(
        n_users=n_users,
        n_items=n_items,
        train_train=take(train & ~judge),
        train_test=take(judge),
        valid=take(valid),
        test=take(test),
        observed_unlabeled=ObservedUnlabeled.empty(),
        seen_in_training=UserItemIndex.from_pairs(users[train], items[train], n_users, n_items),
        name="micro_video_like",
    )


# ---------------------------------------------------------------------------------------------
# Before: main@5bf7e64's dense-mask full ranking
# ---------------------------------------------------------------------------------------------


def _tie_groups(sorted_scores):
    """First and one-past-last position of each entry's tie group (main's helper)."""
    width = sorted_scores.shape[1]
    position = torch.arange(width).expand_as(sorted_scores)
    changes = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    edge = torch.ones_like(sorted_scores[:, :1], dtype=torch.bool)
    starts, ends = torch.cat([edge, changes], 1), torch.cat([changes, edge], 1)
    group_start = torch.where(starts, position, 0).cummax(1).values
    group_last = torch.where(ends, position, width).flip(1).cummin(1).values.flip(1)
    return group_start, group_last + 1


def _dense_batch(scores, relevant, excluded, k, discount):
    """One batch, as main computed it: masked copy, top-k, full-width tie counts."""
    n_relevant = relevant.sum(1)
    masked = scores.masked_fill(excluded, float("-inf"))
    top_scores, top_items = masked.topk(k, dim=1)
    top_relevant = relevant.gather(1, top_items).double()
    group_start, group_end = _tie_groups(top_scores)
    group_discount = (discount[group_end] - discount[group_start]) / (group_end - group_start)
    threshold = top_scores[:, k - 1 : k]
    above = top_scores[:, :k] > threshold
    n_above = above.sum(1)
    hits = (top_relevant * above).sum(1)
    dcg = (top_relevant * group_discount * above).sum(1)
    tied = (masked == threshold) & ~excluded
    n_tied = tied.sum(1)
    tied_share = (tied & relevant).sum(1).double() / n_tied.clamp(min=1)
    slots = torch.minimum(n_above + n_tied, torch.full_like(n_above, k)) - n_above
    hits = hits + tied_share * slots
    dcg = dcg + tied_share * (discount[n_above + slots] - discount[n_above])
    ideal = discount[n_relevant.clamp(min=1, max=k)]
    return n_relevant, hits / n_relevant.clamp(min=1), dcg / ideal


@torch.no_grad()
def dense_full_ranking(
    score_users: Callable[[torch.Tensor], torch.Tensor],
    users: torch.Tensor,
    relevant: UserItemIndex,
    exclude: UserItemIndex,
    k: int = 20,
    user_batch_size: int = 1024,
) -> tuple[float, float, int]:
    """Recall@k, NDCG@k and users ranked, by main's algorithm (users: ascending, distinct)."""
    discount = discount_cumsum(k, users.device)
    candidates = users[relevant.counts()[users] > 0]
    recall_sum = ndcg_sum = 0.0
    ranked = 0
    for start in range(0, len(candidates), user_batch_size):
        batch = candidates[start : start + user_batch_size]
        excluded = exclude.dense_rows(batch)
        targets = relevant.dense_rows(batch) & ~excluded
        n_relevant, recall, ndcg = _dense_batch(score_users(batch), targets, excluded, k, discount)
        valid = n_relevant > 0
        recall_sum += float(recall[valid].sum())
        ndcg_sum += float(ndcg[valid].sum())
        ranked += int(valid.sum())
    return recall_sum / max(ranked, 1), ndcg_sum / max(ranked, 1), ranked


@torch.no_grad()
def forward_pairs(model: Backbone, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """main's ``score_pairs``: the forward in batches of 65,536 (LightGCN propagates per batch)."""
    return torch.cat(
        [model(users[s : s + 65536], items[s : s + 65536]) for s in range(0, len(users), 65536)]
    )


def old_validation(model: Backbone, data: RecData, diagnostic: tuple[torch.Tensor, ...]) -> None:
    """main's per-epoch evaluation of an IG run: valid row metrics, then the diagnostic rows
    scored twice (annotation quality, IDL weight histogram)."""
    evaluate_rows(
        forward_pairs(model, data.valid.users, data.valid.items),
        data.valid.labels,
        data.valid.users,
    )
    for _ in range(2):
        forward_pairs(model, *diagnostic)


def old_score_all(model: Backbone) -> Callable[[torch.Tensor], torch.Tensor]:
    """main's ``Backbone.score_all``: a fresh matrix product, or every pair through the head."""
    factors = model.factors()
    if factors is None:
        return lambda users: score_all_pairwise(model, users)
    return factors.scores


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


class FirstSteps:
    """A batch source that runs only ~``steps`` steps of each epoch, in the epoch's own
    proportion of supervised to meta steps, and scales the time back to the whole epoch."""

    def __init__(self, source: BatchSource, steps: int) -> None:
        self.source, self.steps = source, steps
        self.plan_seconds = 0.0
        self.scale = 1.0

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        self.plan_seconds, full = timed(lambda: self.source.plan(epoch, with_meta))
        total = len(full.supervised) + len(full.meta)
        supervised = max(1, round(self.steps * len(full.supervised) / total))
        meta = max(1, self.steps - supervised) if full.meta else 0
        self.scale = total / (supervised + meta)
        return EpochPlan(full.supervised[:supervised], full.meta[:meta])

    def epoch_seconds(self, measured: float) -> float:
        return self.plan_seconds + (measured - self.plan_seconds) * self.scale


def measure(data: RecData, backbone: str, args: argparse.Namespace, estimate: bool) -> dict:
    """One IG epoch, its validation, ``result()``, and the test ranking before and after."""
    config = TrainConfig(method="ig", backbone=backbone, epochs=2, patience=2, seed=0)
    source = BatchSource(training_rows(config, data), config)
    first_steps = FirstSteps(source, args.train_steps) if estimate else None
    trainer = Trainer(config, data, batch_source=first_steps or source)
    trainer.run_epoch(0)  # one-off costs (first allocations, kernel choices) stay out
    record = trainer.run_epoch(1)
    row: dict = {"backbone": backbone, "train_estimated": estimate}
    row["train_s"] = record.train_seconds
    if first_steps is not None:
        row["train_s"] = first_steps.epoch_seconds(record.train_seconds)
    row["valid_s"] = record.eval_seconds
    rows = trainer.diagnostics.rows  # the trainer's fixed diagnostic sample
    diagnostic = (
        torch.cat([rows["sampled_users"], rows["observed_users"]]),
        torch.cat([rows["sampled_items"], rows["observed_items"]]),
    )
    row["valid_before_s"], _ = timed(lambda: old_validation(trainer.model, data, diagnostic))
    row["result_s"], result = timed(trainer.result)
    test, model, seen = result.test, result.model, data.seen_in_training
    row["protocol"] = "exact" if "full_users" in test else "sampled_users"
    if row["protocol"] == "exact":
        row["test_metric"] = f"exact Recall@20 {test['full_recall_at_20']:.4f}"
    else:
        row["test_metric"] = (
            f"sampled_users Recall@20 {test['sampled_users_recall_at_20']:.4f} ± "
            f"{test['sampled_users_recall_at_20_stderr']:.4f} "
            f"({test['sampled_users_count']} of {test['sampled_users_population']} users)"
        )
    # The exact ranking of every test user, before and after; a cap ranks the first users
    # only and scales the time to all of them (both paths' cost is linear in users).
    positives = data.test.take(data.test.labels > 0.5)
    relevant = UserItemIndex.from_pairs(
        positives.users, positives.items, data.n_users, data.n_items
    )
    users = torch.unique(positives.users)
    factorized = model.factors() is not None
    after_cap = 0 if factorized else args.neumf_users
    before_cap = args.before_users if factorized else args.neumf_users
    capped = users[:after_cap] if after_cap else users
    split = data.test if not after_cap else data.test.take(torch.isin(data.test.users, capped))
    after_s, after = timed(
        lambda: evaluate_full_ranking(model, split, seen, protocol="exact").metrics
    )
    before_users = users[:before_cap] if before_cap else users
    if not torch.equal(before_users, capped):
        split = data.test.take(torch.isin(data.test.users, before_users))
        after = evaluate_full_ranking(model, split, seen, protocol="exact").metrics
    before_s, (recall, ndcg, ranked) = timed(
        lambda: dense_full_ranking(old_score_all(model), before_users, relevant, seen)
    )
    row["after_ranked"], row["before_ranked"] = len(capped), len(before_users)
    row["full_after_s"] = after_s * len(users) / len(capped)
    row["full_before_s"] = before_s * len(users) / len(before_users)
    row["n_users"] = len(users)
    row["largest_difference"] = max(
        abs(recall - after["full_recall_at_20"]), abs(ndcg - after["full_ndcg_at_20"])
    )
    # main's result(): the test split's row metrics as main's validation scored valid (same
    # cost model, test-sized), its annotation, and the old ranking of every user.
    test_split = RecData(**{**vars(data), "valid": data.test})
    row["result_before_s"] = (
        row["full_before_s"] + timed(lambda: old_validation(model, test_split, diagnostic))[0]
    )
    return row


def share(row: dict, side: str, epochs: int) -> float:
    """Evaluation's share of the wall time of a run of ``epochs`` such epochs (``side``:
    ``before`` or ``after``)."""
    valid, result = (
        (row["valid_before_s"], row["result_before_s"])
        if side == "before"
        else (row["valid_s"], row["result_s"])
    )
    evaluation = epochs * valid + result
    return evaluation / (epochs * row["train_s"] + evaluation)


def print_row(row: dict) -> None:
    train = f"{row['train_s']:.1f} s" + (" (est.)" if row["train_estimated"] else "")
    before, after = (
        f"{row[f'full_{side}_s']:.2f} s"
        + (
            f" (scaled from {row[f'{side}_ranked']} users)"
            if row[f"{side}_ranked"] < row["n_users"]
            else ""
        )
        for side in ("before", "after")
    )
    speed_up = row["full_before_s"] / row["full_after_s"]
    lines = [
        f"{row['backbone']}: IG epoch {train}; validation per epoch: before "
        f"{row['valid_before_s']:.2f} s, after {row['valid_s']:.2f} s",
        f"  exact ranking of all {row['n_users']} test users: before {before}, after {after} "
        f"({speed_up:.1f}x); largest |difference| {row['largest_difference']:.1e}",
        f"  result() after {row['result_s']:.2f} s, {row['test_metric']}; "
        f"before ~{row['result_before_s']:.2f} s",
    ]
    for epochs in RUN_EPOCHS:
        before, after = share(row, "before", epochs), share(row, "after", epochs)
        lines.append(
            f"  evaluation share of a {epochs}-epoch run: before {before:.0%}, after {after:.0%}"
        )
    print("\n" + "\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["ml1m", "micro_video"], default="ml1m")
    parser.add_argument("--backbones", default="gmf,mf,lightgcn,neumf")
    parser.add_argument(
        "--before-users", type=int, default=0, help="users main's path ranks (0: all)"
    )
    parser.add_argument(
        "--neumf-users",
        type=int,
        default=0,
        help="users NeuMF's exact rankings (before and after) rank (0: all)",
    )
    parser.add_argument(
        "--estimate", default="", help="backbones whose epoch is timed over --train-steps steps"
    )
    parser.add_argument("--train-steps", type=int, default=60, help="steps timed when estimated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    if args.smoke_test:
        data = micro_video_like(400, 3000, 20_000)
    elif args.size == "ml1m":
        data = make_synthetic_recdata(SyntheticConfig.preset("ml1m_scale"))
    else:
        data = micro_video_like(**MICRO_VIDEO)
    print(
        f"size={args.size}{' (smoke test)' if args.smoke_test else ''}: {data.n_users} users x "
        f"{data.n_items} items; training {len(data.train_train) + len(data.train_test)} rows, "
        f"valid {len(data.valid)}, test {len(data.test)}; built in "
        f"{time.perf_counter() - started:.1f} s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    for backbone in args.backbones.split(","):
        print_row(measure(data, backbone, args, backbone in args.estimate.split(",")))


if __name__ == "__main__":
    main()
