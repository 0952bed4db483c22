"""The trainer: the one training loop, and the reference every distributed run reproduces.

One :class:`Trainer` runs any method on any backbone: it plans each epoch's batches
(:mod:`~invlearn_ray.training.batches`), takes supervised steps with the method's objective and,
for IG, meta steps (:class:`~invlearn_ray.methods.inverse_gradient.InverseGradient`), then
scores the validation split. At each epoch's end it calls its collaborators: the
:class:`~invlearn_ray.training.selection.ModelSelection` (best model by a *ranking* metric,
method.md §5, and early stopping) and the diagnostics of
:mod:`~invlearn_ray.training.diagnostics` (IG's direction log, annotation quality, IDL weight
histograms). A method that does not train (``MethodSpec.trains`` False: the popularity scorer)
is computed from the training rows in one "epoch" of no steps, then validated and tested the
same way, so it reaches run folders, MLflow and tables as any method does.

:meth:`Trainer.fit` owns the loop — start or resume, epochs, stop, score — in every
environment; what differs is its :class:`~invlearn_ray.training.sinks.EpochSink` (a progress
bar in one process; Ray Train's or Tune's report and checkpoint). In a Ray Train worker the
trainer gets a :class:`~invlearn_ray.optim.collective.TorchDistributedCollective` and the
worker's :class:`~invlearn_ray.training.batches.TrainingRows`; each worker then holds and
scores only its users' validation and test rows
(:func:`~invlearn_ray.evaluation.evaluate.evaluation_shard`), evaluations combine the shards'
statistics, so every worker reports the one-process metrics and stops at the same epoch, and
:meth:`Trainer.result` is a collective call every worker makes. All randomness comes from
generators keyed by (seed, epoch, rank), so resuming at epoch ``e`` replays exactly what an
uninterrupted run would have done. With ``config.shard_tables`` the trainer's tables are
sharded by row across the workers (:mod:`~invlearn_ray.optim.sharded_tables`): steps,
optimizer and IG take the sharded table's hooks, an epoch's evaluation scores
:meth:`Trainer.epoch_scoring_model` (the scored rows only), test scoring the selected model
gathered once, and :meth:`Trainer.state_dict` gathers whole tables or takes each worker's rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from invlearn_ray.data.recdata import Interactions, RecData
from invlearn_ray.errors import UserError
from invlearn_ray.evaluation.evaluate import (
    evaluate_full_ranking,
    evaluate_split,
    evaluation_shard,
    score_pairs,
)
from invlearn_ray.methods.inverse_gradient import InverseGradient
from invlearn_ray.methods.losses import bce_with_logits
from invlearn_ray.methods.objectives import BatchLoss, Objective, TrainBatch
from invlearn_ray.methods.popularity import fit_item_prior, item_prior_from_rows
from invlearn_ray.methods.registry import build_objective, method_spec
from invlearn_ray.models.backbones import Backbone, build_backbone
from invlearn_ray.optim.collective import Collective, LocalCollective, TorchDistributedCollective
from invlearn_ray.optim.gradients import WorkerMean, grad_and_value
from invlearn_ray.optim.optimizers import DenseUpdate, LazyAdam, ParameterUpdate
from invlearn_ray.optim.sharded_tables import ShardedTables, shard_model
from invlearn_ray.optim.touched_rows import batch_ids, rows_of
from invlearn_ray.training.batches import BatchSource, MetaBatch, TrainingRows, iterate
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.cuda_graphs import GraphedStep
from invlearn_ray.training.diagnostics import DirectionLog, UnlabeledDiagnostics
from invlearn_ray.training.heap import release_freed_heap
from invlearn_ray.training.selection import ModelSelection


def supervised_gradient(
    objective: Objective,
    model: Backbone,
    params: dict[str, Tensor],
    batch: TrainBatch,
    step: int,
    epoch: int,
    functional: bool = False,
) -> tuple[dict[str, Tensor], BatchLoss]:
    """∇θ of the objective's loss *sum* on one batch (pure: ``torch.compile`` can take it whole)."""

    def loss_sum(theta: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
        loss = objective(lambda users, items: model(users, items, theta), batch, step, epoch)
        # torch.func's auxiliary outputs must be tensors: the record travels only if present.
        extra = (loss.count,) if loss.record is None else (loss.count, loss.record)
        return loss.total, extra

    grads, (total, extra) = grad_and_value(loss_sum, params, functional)
    return grads, BatchLoss(total, *extra)


class TrainingDiverged(RuntimeError, UserError):
    """An epoch's loss or weights left their bounds (``TrainConfig.max_train_loss`` /
    ``max_weight``) or are not finite: stop rather than train on, and publish, garbage."""


def largest_weight(model: Backbone) -> float:
    """The largest absolute parameter value (NaN if any is NaN). One pass over the weights and
    one host sync: cheap once per epoch. 0 for a scorer without parameters (``popularity``)."""
    peaks = [parameter.detach().abs().amax() for parameter in model.parameters()]
    return torch.stack(peaks).max().item() if peaks else 0.0


def check_divergence(config: TrainConfig, epoch: int, train_loss: float, weight: float) -> None:
    """Raise :class:`TrainingDiverged` when an epoch's loss or largest weight is out of bounds.

    Args:
        train_loss: the epoch's mean training loss (the same on every worker).
        weight: the largest absolute parameter value after the epoch (see
            :func:`largest_weight`; the same on every worker, whose parameters are identical).
    """
    loss_ok = math.isfinite(train_loss) and train_loss <= config.max_train_loss
    weight_ok = math.isfinite(weight) and weight <= config.max_weight
    if loss_ok and weight_ok:
        return
    broken = [
        f"the training loss is {train_loss:.3g} (bound max_train_loss={config.max_train_loss:g})"
        if not loss_ok
        else None,
        f"the largest weight is {weight:.3g} (bound max_weight={config.max_weight:g})"
        if not weight_ok
        else None,
    ]
    step = f"lr={config.lr:g}" + (
        f", dual_lr_ratio={config.dual_lr_ratio:g}" if config.method == "ig" else ""
    )
    raise TrainingDiverged(
        f"training diverged at epoch {epoch}: {' and '.join(b for b in broken if b)}; "
        f"{config.method} on {config.backbone} at {step}. Lower the learning rate (lr), or "
        "raise max_train_loss / max_weight if such values are expected. No model was saved."
    )


class ShardingUnavailableError(ValueError, UserError):
    """``shard_tables`` asked of a run without data-parallel workers to shard across."""


class UnsuitableDatasetError(ValueError, UserError):
    """The configuration cannot train on this dataset."""


def check_unlabeled_rows(config: TrainConfig, n_observed: int, dataset_name: str) -> None:
    """Refuse a method that reads only observed-unlabeled rows on a dataset without any.

    Not a silent fallback: with no unlabeled rows the method would train as None does.

    Args:
        n_observed: the dataset's observed-unlabeled rows (its ``unclear/`` split).

    Raises:
        UnsuitableDatasetError: ``n_observed == 0`` and ``unlabeled_source='observed'`` or a
            method that reads observed rows whatever the source (``watched_positive``).
    """
    if config.needs_unlabeled and config.unlabeled_source == "observed" and not n_observed:
        raise UnsuitableDatasetError(
            f"method {config.method!r} with unlabeled_source='observed' needs "
            f"observed-unlabeled rows, and dataset {dataset_name!r} has none (no unclear band, "
            "label fraction 1); use unlabeled_source='sampled' or 'both', or build the "
            "dataset with --label-fraction below 1"
        )
    if method_spec(config.supervised_method).observed_rows and not n_observed:
        raise UnsuitableDatasetError(
            f"method {config.supervised_method!r} learns from observed-unlabeled rows, and "
            f"dataset {dataset_name!r} has none (no unclear band, label fraction 1); build it "
            "with --label-fraction below 1 or train another method"
        )


def build_model(config: TrainConfig, data: RecData) -> Backbone:
    """The configured backbone, initialised from ``config.seed`` without touching global RNG."""
    extra: dict[str, Any] = {"init_scale": config.init_scale}
    if config.backbone == "neumf":
        extra["mlp_layers"] = config.mlp_layers
    if config.backbone == "lightgcn":
        positives = data.training_positives()
        extra |= {
            "num_layers": config.gcn_layers,
            "graph_users": positives.users.cpu(),
            "graph_items": positives.items.cpu(),
        }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_backbone(
            config.backbone,
            data.n_users,
            data.n_items,
            embedding_dim=config.embedding_dim,
            **extra,
        )


def make_optimizer(
    model: Backbone, config: TrainConfig, tables: ShardedTables | None = None
) -> ParameterUpdate:
    """The configured update (``config.embedding_optimizer``, see :mod:`core.optimizers`).

    Dense Adam uses the fused kernel: one pass per tensor instead of ~10 (measured 9x faster per
    step on this 2-core CPU at ML-1M table sizes; also the fast path on CUDA); capturable (step
    counts on the device) when steps are replayed as CUDA graphs. With sharded ``tables`` the
    same update runs over this rank's rows of each table (plain tensors, so the fused kernel
    still applies) and the replicated heads.
    """
    view = model if tables is None else tables.local_view(model)
    if config.embedding_optimizer == "lazy_adam":
        update: ParameterUpdate = LazyAdam(view, lr=config.lr, weight_decay=config.weight_decay)
    else:
        adam = torch.optim.Adam(
            view.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=True,
            capturable=config.cuda_graphs,
        )
        update = DenseUpdate(view, adam)
    return update if tables is None else tables.update(update)


def uses_touched_rows(config: TrainConfig, model: Backbone) -> bool:
    """Whether steps differentiate only the table rows their batch reads (core.touched_rows):
    for gather backbones in eager steps; compiled and CUDA-graphed steps need shapes that do
    not depend on the batch's ids, LightGCN propagates whole tables."""
    return model.table_index is not None and not (config.compile or config.cuda_graphs)


def training_rows(config: TrainConfig, data: RecData) -> TrainingRows:
    """What training may read. IG (and ``none_ig_steps``, which takes IG's steps) fits
    training-train and steps on training-test; every other method fits all labeled training
    rows (IG gets no more labeled data than they do)."""
    ig_batches = method_spec(config.method).ig_batches
    labeled = data.train_train if ig_batches else data.labeled_training()
    empty = Interactions.empty().to(labeled.users.device)
    return TrainingRows(
        labeled=labeled,
        train_test=data.train_test if ig_batches else empty,
        observed_users=data.observed_unlabeled.users,
        observed_items=data.observed_unlabeled.items,
        seen=data.seen_in_training,
    )


@dataclass
class EpochRecord:
    """What one epoch did and how the model scored on validation after it."""

    epoch: int
    train_loss: float
    valid: dict[str, float]
    train_seconds: float
    eval_seconds: float
    choices: dict[str, int] = field(default_factory=dict)
    annotation: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """One level of ``{name: number}`` for metric loggers (``valid/gauc``, ...)."""
        flat: dict[str, float] = {"epoch": self.epoch, "train_loss": self.train_loss}
        flat.update({f"valid/{key}": value for key, value in self.valid.items()})
        flat.update({f"ig/{key}": value for key, value in self.choices.items()})
        flat.update({f"annotation/{key}": value for key, value in self.annotation.items()})
        flat["train_seconds"] = self.train_seconds
        return flat


class EpochSink:
    """What :meth:`Trainer.fit` calls around each epoch (the environment's part of a run:
    progress, reports, checkpoints; see :mod:`invlearn_ray.training.sinks`). The defaults do
    nothing."""

    def start_epoch(self, epoch: int) -> None:
        """Called before epoch ``epoch`` trains (after a resume: first the resumed epoch)."""

    def report(self, record: EpochRecord, trainer: Trainer) -> None:
        """Called after each epoch, with the trainer whose ``state_dict()`` resumes after it."""


@dataclass
class TrainResult:
    """The outcome of a run: the selected model and everything needed to report on it."""

    config: dict[str, Any]
    model: Backbone
    best_epoch: int
    epochs_run: int
    history: list[EpochRecord]
    valid: dict[str, float]
    test: dict[str, float]
    direction_log: dict[str, Tensor]
    weight_histograms: dict[int, Tensor]
    train_seconds: float
    full_ranking_sample: dict[str, Any] = field(default_factory=dict)
    """The users a ``sampled_users`` test ranking drew (seed, population, ids); empty if exact."""
    scored_on_test: bool = True
    """False for a tuning trial's candidate: ``test`` is empty, and its run folder holds the
    model's weights without the dataset files that recommending needs."""


class Trainer:
    """Trains one configuration on one dataset; see the module docstring.

    Args:
        config: what to train.
        data: the dataset (already on ``device``).
        collective: data-parallel reductions (default: one process).
        rows: this worker's training rows (default: all of ``data``'s, for one process).
        steps_per_epoch: supervised steps per epoch, when data-parallel workers must agree.
        batch_source: override the batch planning (e.g. to replay recorded batches).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: RecData,
        collective: Collective | None = None,
        rows: TrainingRows | None = None,
        steps_per_epoch: int | None = None,
        batch_source: BatchSource | None = None,
    ) -> None:
        self.config = config
        self.collective = collective or LocalCollective()
        # Each worker scores its users' validation and test rows; evaluations combine shards.
        self.data = evaluation_shard(data, self.collective.rank, self.collective.world_size)
        self.device = data.valid.users.device
        if config.cuda_graphs and self.device.type != "cuda":
            raise ValueError(
                f"cuda_graphs needs the data on a CUDA device, not {self.device}; "
                "move it with RecData.to('cuda') or turn cuda_graphs off"
            )
        check_unlabeled_rows(config, len(data.observed_unlabeled), data.name)
        rows = rows or training_rows(config, data)
        self.rows = rows
        self.trains = method_spec(config.method).trains
        self.tables: ShardedTables | None = None
        if config.shard_tables and not isinstance(self.collective, TorchDistributedCollective):
            raise ShardingUnavailableError(
                "shard_tables splits the tables among data-parallel workers; this is one "
                "process: run with workers (Ray Train) or turn shard_tables off"
            )
        if not self.trains:
            self.model = fit_item_prior(
                rows.labeled,
                rows.observed_items,
                data.n_users,
                data.n_items,
                prior_weight=config.popularity_prior,
                play_weight=config.popularity_play_weight,
                collective=self.collective,
            ).to(self.device)
        elif config.shard_tables:
            self.model, self.tables = shard_model(
                lambda: build_model(config, data).to(self.device), self.collective
            )
        else:
            self.model = build_model(config, data).to(self.device)
        if self.trains:
            if config.bias_init == "popularity":
                self.model.start_from_item_prior(
                    item_prior_from_rows(
                        rows,
                        data.n_items,
                        prior_weight=config.popularity_prior,
                        play_weight=config.popularity_play_weight,
                        collective=self.collective,
                    ).to(self.device)
                )
            self.optimizer = make_optimizer(self.model, config, self.tables)
            self.touched_rows = uses_touched_rows(config, self.model)
            self._supervised_mean = (
                self.tables.mean() if self.tables else WorkerMean(self.collective)
            )
            self.batches = batch_source or BatchSource(
                rows,
                config,
                rank=self.collective.rank,
                world_size=self.collective.world_size,
                steps_per_epoch=steps_per_epoch,
            )
            self.objective = build_objective(config, len(rows.labeled), self.device)
            self._supervised_gradient = (
                torch.compile(supervised_gradient) if config.compile else supervised_gradient
            )
            self.inverse_gradient = InverseGradient(
                self.model,
                self.optimizer,
                dual_lr=config.dual_lr,
                step_rule=config.step_rule,
                temperature=config.idl_temperature,
                collective=self.collective,
                compile=config.compile,
                touched_rows=self.touched_rows,
                direction=config.ig_direction,
                tables=self.tables,
            )
        self._graphed: dict[tuple[str, ...], GraphedStep] = {}
        self.global_step = 0
        self.next_epoch = 0
        self.history: list[EpochRecord] = []
        # A scorer (trains=False) is computed once: one epoch of no steps.
        max_epochs = config.epochs if self.trains else 1
        self.selection = ModelSelection(config.select_metric, config.patience, max_epochs)
        self.directions = DirectionLog()
        self.diagnostics = UnlabeledDiagnostics(config, data, self.device)

    # ----------------------------------------------------------------------------- steps

    def _supervised_tensors(
        self, fields: tuple[str, ...], epoch: int, *tensors: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One supervised step from the batch's tensors: local gradient sums (on the table rows
        the batch reads), their global mean with the row count, one optimizer step."""
        batch = TrainBatch(**dict(zip(fields, tensors, strict=True)))
        params = {name: param.detach() for name, param in self.model.named_parameters()}
        if self.tables is not None:
            (read,) = self.tables.rows_of(batch_ids(batch))
        else:
            read = rows_of(self.model, batch_ids(batch), self.touched_rows)
        grads, loss = self._supervised_gradient(
            self.objective,
            self.model,
            read.gather(params),
            read.renumber_batch(batch),
            self.global_step,
            epoch,
            self.config.compile,
        )
        grads = self._supervised_mean(read.row_gradients(grads, params), loss.count)
        self.optimizer.step(grads)
        if loss.record is not None:
            self.objective.record(batch, loss.record)
        return loss.total.detach(), loss.count.detach()

    def _meta_tensors(self, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        result = self.inverse_gradient.step(*tensors)
        return result.choice, result.test_losses

    def _graph(self, name: tuple[str, ...], fn) -> GraphedStep:
        if name not in self._graphed:
            # A captured step replays with the constants of its capture (epoch 0, the first
            # step's schedule): only a static step may be captured. TrainConfig refuses
            # cuda_graphs for other methods; this guards every other way in.
            if not method_spec(self.config.method).static_step:
                raise RuntimeError(
                    f"method {self.config.method!r} has no static step: a CUDA graph of it "
                    "would replay the first epoch's constants"
                )
            self._graphed[name] = GraphedStep(fn)
        return self._graphed[name]

    def supervised_step(self, batch: TrainBatch, epoch: int) -> BatchLoss:
        """One step of the method's objective (for IG: of BCE on training-train)."""
        fields = tuple(name for name, value in vars(batch).items() if value is not None)
        tensors = [getattr(batch, name) for name in fields]
        if self.config.cuda_graphs:
            step = self._graph(fields, lambda *t: self._supervised_tensors(fields, 0, *t))
            total, count = step(*tensors)
        else:
            total, count = self._supervised_tensors(fields, epoch, *tensors)
        self.global_step += 1
        return BatchLoss(total.clone(), count.clone())

    def meta_step(self, batch: MetaBatch, epoch: int) -> None:
        """One IG meta step; its choice and three losses go to the direction log."""
        tensors = (
            batch.unlabeled_users,
            batch.unlabeled_items,
            batch.test_users,
            batch.test_items,
            batch.test_labels,
        )
        if self.config.cuda_graphs:
            choice, losses = self._graph(("meta",), self._meta_tensors)(*tensors)
        else:
            choice, losses = self._meta_tensors(*tensors)
        self.directions.add(choice, losses)

    # ----------------------------------------------------------------------------- epochs

    def _train_steps(self, epoch: int) -> tuple[Tensor, Tensor]:
        """One epoch's steps; returns the supervised loss sum and count."""
        plan = self.batches.plan(epoch, with_meta=epoch >= self.config.warmup_epochs)
        loss_sum = torch.zeros((), device=self.device)
        loss_count = torch.zeros((), device=self.device)
        for batch in iterate(plan, self.config.ig_schedule):
            if isinstance(batch, MetaBatch):
                self.meta_step(batch, epoch)
            else:
                loss = self.supervised_step(batch, epoch)
                loss_sum += loss.total
                loss_count += loss.count
        return loss_sum, loss_count

    @torch.no_grad()
    def _labeled_loss(self) -> tuple[Tensor, Tensor]:
        """BCE sum and count of the (non-trained) scorer on the labeled training rows: what a
        scorer reports as its training loss."""
        labeled = self.rows.labeled
        logits = score_pairs(self.model, labeled.users, labeled.items)
        total = bce_with_logits(logits, labeled.labels, reduction="sum")
        return total, total.new_tensor(float(len(labeled)))

    def run_epoch(self, epoch: int) -> EpochRecord:
        """Train one epoch, then score validation and update the model selection."""
        self.model.train()
        started = time.perf_counter()
        loss_sum, loss_count = self._train_steps(epoch) if self.trains else self._labeled_loss()
        choices = self.directions.end_epoch(epoch)
        release_freed_heap()
        # Every worker's sums: each decides on the global loss, so all stop at the same epoch.
        totals = torch.stack([loss_sum, loss_count])
        self.collective.all_reduce_sum_([totals])
        train_loss = (totals[0] / totals[1].clamp(min=1.0)).item()
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scoring = self.epoch_scoring_model()
        check_divergence(self.config, epoch, train_loss, self.largest_weight())

        valid = evaluate_split(scoring, self.data.valid, collective=self.collective)
        annotation = self.diagnostics.end_epoch(epoch, scoring)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            valid=valid,
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - started,
            choices=choices,
            annotation=annotation,
        )
        self.selection.update(epoch, valid, self.model)
        self.history.append(record)
        self.next_epoch = epoch + 1
        return record

    @property
    def should_stop(self) -> bool:
        return self.selection.should_stop(self.next_epoch)

    @property
    def best_epoch(self) -> int:
        return self.selection.best_epoch

    def fit(
        self,
        sink: EpochSink | None = None,
        start: dict[str, Any] | None = None,
        score_test: bool = True,
    ) -> TrainResult:
        """Train until early stopping or ``config.epochs``, then score the selected model.

        The one training loop: a single process, a Ray Train worker and a Tune trial all run
        it, differing only in their ``sink``.

        Args:
            sink: told before and after every epoch (progress, reports, checkpoints).
            start: a :meth:`state_dict` to resume from (a checkpoint's); the run then replays
                exactly what an uninterrupted run would have done after it.
            score_test: score the selected model on test (False for a tuning trial: a
                candidate is judged on validation only).
        """
        if start is not None:
            self.load_state_dict(start)
        sink = sink or EpochSink()
        while not self.should_stop:
            sink.start_epoch(self.next_epoch)
            record = self.run_epoch(self.next_epoch)
            sink.report(record, self)
        return self.result(score_test=score_test)

    def epoch_scoring_model(self) -> Backbone:
        """What an epoch's evaluation scores (validation and the diagnostic rows): the model,
        or with sharded tables a copy holding only the rows of this worker's scored users and
        items (:meth:`ShardedTables.rows_model`; every worker calls it). Memory: those rows,
        not the tables."""
        if self.tables is None:
            return self.model
        users, items = self.diagnostics.pairs()
        ids = {"user": [self.data.valid.users, users], "item": [self.data.valid.items, items]}
        return self.tables.rows_model(self.model, ids)

    def largest_weight(self) -> float:
        """The model's largest absolute weight (sharded: every worker calls it)."""
        if self.tables is None:
            return largest_weight(self.model)
        return self.tables.largest_weight(self.model)

    def scoring_model(self) -> Backbone:
        """The model with whole tables: itself, or with sharded tables a gathered copy (every
        worker calls it: an all-gather per table; memory: the whole model, until dropped).
        Training never calls it; an epoch scores :meth:`epoch_scoring_model`."""
        return self.model if self.tables is None else self.tables.full_model(self.model)

    def selected_model(self) -> Backbone:
        """A copy of the model at the best validation epoch, with whole tables (sharded: every
        worker calls it)."""
        selected = self.selection.selected(self.model)
        return selected if self.tables is None else self.tables.full_model(selected)

    def result(self, score_test: bool = True) -> TrainResult:
        """Score the selected model on the test split — once, after selection. Data-parallel:
        every worker calls it (each scores its shard of the test users). Without
        ``score_test`` the result carries no test metrics (a tuning trial's candidate)."""
        model = self.selected_model()
        test: dict[str, float] = {}
        ranking_sample: dict[str, Any] = {}
        if score_test:
            test = evaluate_split(model, self.data.test, collective=self.collective)
            ranking = evaluate_full_ranking(
                model,
                self.data.test,
                self.data.seen_in_training,
                user_batch_size=self.config.eval_user_batch,
                protocol=self.config.full_ranking,
                sample_users=self.config.full_ranking_users,
                seed=self.config.seed,
                collective=self.collective,
            )
            test.update(ranking.metrics)
            test.update(self.diagnostics.annotation(model))
            ranking_sample = ranking.record()
        best = next((r for r in self.history if r.epoch == self.best_epoch), None)
        return TrainResult(
            config=self.config.to_dict(),
            model=model,
            best_epoch=self.best_epoch,
            epochs_run=len(self.history),
            history=list(self.history),
            valid=dict(best.valid) if best else {},
            test=test,
            direction_log=self.directions.tensors(),
            weight_histograms=dict(self.diagnostics.weight_histograms),
            train_seconds=sum(r.train_seconds for r in self.history),
            full_ranking_sample=ranking_sample,
            scored_on_test=score_test,
        )

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self, whole_tables: bool = True) -> dict[str, Any]:
        """Everything needed to resume after ``next_epoch - 1``; tensors only in nested dicts.

        With sharded tables, ``whole_tables`` gathers the tables and their moments (every
        worker calls it): the replicated run's state, which any worker count can cut again
        on load, at the cost of the whole state on every worker. Without it each worker
        takes only its rows (no collective): the state then carries a ``"shard"`` entry —
        this worker's ``rank`` and ``world_size`` and the ``paths`` of the entries that hold
        its rows (:func:`~invlearn_ray.optim.sharded_tables.state_entry`), so a checkpoint
        can store those per worker and the rest once.
        """
        if self.tables is not None and not whole_tables:
            return self._own_state_dict(self.tables)
        selection = self.selection.state_dict()
        model = self.model.state_dict()
        if self.tables is not None:
            model = self.tables.gather_state(model)
            if selection["best_state"] is not None:
                selection["best_state"] = self.tables.gather_state(selection["best_state"])
        optimizer = self.optimizer.state_dict() if self.trains else {}
        return self._state(model, optimizer, selection)

    def _own_state_dict(self, tables: ShardedTables) -> dict[str, Any]:
        selection = self.selection.state_dict()
        if selection["best_state"] is not None:
            selection["best_state"] = tables.own_state(selection["best_state"])
        optimizer = self.optimizer.own_state_dict()
        state = self._state(tables.own_state(self.model.state_dict()), optimizer, selection)
        paths = [("model", name) for name in tables.local]
        if selection["best_state"] is not None:
            paths += [("best_state", name) for name in tables.local]
        paths += [("optimizer", *path) for path, _ in self.optimizer.table_paths(optimizer)]
        state["shard"] = {
            "rank": self.collective.rank,
            "world_size": self.collective.world_size,
            "paths": paths,
        }
        return state

    def _state(
        self, model: dict[str, Tensor], optimizer: dict[str, Any], selection: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "model": model,
            "optimizer": optimizer,
            "inverse_gradient": self.inverse_gradient.state_dict() if self.trains else {},
            "global_step": self.global_step,
            "next_epoch": self.next_epoch,
            **selection,
            "history": [vars(record) for record in self.history],
            "direction_log": self.directions.state_dict(),
            "weight_histograms": self.diagnostics.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a :meth:`state_dict`: whole tables, or this worker's rows (with its
        ``"shard"`` entry, which must name this worker's place)."""
        own_rows = "shard" in state
        if own_rows:
            self._check_shard(state["shard"])
        if self.tables is not None:
            self.tables.load_model_state(self.model, state["model"], own_rows=own_rows)
        else:
            self.model.load_state_dict(state["model"])
        if self.trains:
            if own_rows:
                self.optimizer.load_own_state_dict(state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.inverse_gradient.load_state_dict(state["inverse_gradient"])
        self.global_step = state["global_step"]
        self.next_epoch = state["next_epoch"]
        self.selection.load_state_dict(state)
        if self.tables is not None and self.selection.best_state is not None:
            best = self.selection.best_state
            self.selection.best_state = (
                self.tables.distribute_own(best) if own_rows else self.tables.shard_state(best)
            )
        self.history = [EpochRecord(**record) for record in state["history"]]
        self.directions.load_state_dict(state["direction_log"])
        self.diagnostics.load_state_dict(state["weight_histograms"])

    def _check_shard(self, shard: dict[str, Any]) -> None:
        place = (self.collective.rank, self.collective.world_size)
        if self.tables is None or (shard["rank"], shard["world_size"]) != place:
            raise ValueError(
                f"this state holds rank {shard['rank']}'s rows of tables sharded over "
                f"{shard['world_size']} workers, not rows for rank {place[0]} of "
                f"{place[1]} workers with shard_tables={self.tables is not None}: load it "
                "into that worker, or resume from a state with whole tables"
            )
