"""Every training option and its default, in one place.

A :class:`TrainConfig` is plain data (JSON-able), so the same object configures a single-process
run, a Ray Train worker, a Tune trial and an MLflow run's params. Unknown keys are errors, never
warnings (a misspelt option silently running with its default ruins a study).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from invlearn_ray.evaluation.evaluate import FULL_RANKING_PROTOCOLS
from invlearn_ray.methods.registry import BASE_METHODS, METHODS, STATIC_STEP_METHODS, method_spec
from invlearn_ray.models.backbones import BACKBONES

UNLABELED_SOURCES = ("sampled", "observed", "both")
SELECT_METRICS = ("gauc", "auc", "ndcg_at_10", "ndcg_at_20", "mrr")
STEP_RULES = ("sgd", "sign", "adam")
META_STEP_COUNTS = ("train_test", "train_train")
IG_SCHEDULES = ("sequential", "interleaved")
EMBEDDING_OPTIMIZERS = ("adam", "lazy_adam")
IG_DIRECTIONS = ("batch", "per_row")
IG_JUDGES = ("fixed", "rotating")
BIAS_INITS = ("zero", "popularity")


@dataclass
class TrainConfig:
    """Options of one training run. Paper symbols in brackets.

    Attributes:
        method: one of :data:`~invlearn_ray.methods.registry.METHODS` (their facts:
            :mod:`invlearn_ray.methods.registry`).
        backbone: ``mf`` | ``gmf`` | ``biased_mf`` | ``neumf`` | ``lightgcn``.
        embedding_dim: factor size (the paper: 32).
        init_scale: multiplies the initial standard deviation of every embedding table (each
            backbone's own default: 0.01 for GMF/NeuMF as NCF, 0.1 for MF/biased MF/LightGCN).
            A bilinear model starts at its saddle: labeled-only GMF from N(0, 0.01²) with a
            handful of steps per epoch stays at AUC 0.50 (issue 13), so it is tuned.
        bias_init: ``zero`` | ``popularity``: where a backbone's item biases start. With
            ``popularity`` (``biased_mf`` only) ``μ + b_i`` starts at the popularity scorer's
            item logit (from the labeled training rows this method may read, with
            ``popularity_prior`` and ``popularity_play_weight``), so training starts from the
            ranking a practitioner would ship without training and must add personalisation
            to it, not first rediscover popularity from few labels (issue 13).
        mlp_layers: NeuMF tower depth (He et al.: 3).
        gcn_layers: LightGCN propagation depth K.
        lr: [γ] Adam learning rate of every supervised step and of IG's test-loss step.
        weight_decay: Adam L2 penalty.
        embedding_optimizer: how Adam updates the embedding tables. ``adam`` (the paper's):
            exact dense Adam, every row moves every step (momentum), so a step costs O(table)
            on every worker. ``lazy_adam``: only the rows a step touched update their moments
            and values (``torch.optim.SparseAdam`` semantics), O(touched rows) per step — what
            makes data parallelism pay on large tables (README, Scaling). Needs a backbone
            whose tables are row gathers (mf, gmf, neumf) and eager steps (no compile or
            cuda_graphs). See ``invlearn_ray.optim.optimizers``.
        shard_tables: data-parallel runs only (Ray Train workers, or any ``torch.distributed``
            group): split every embedding table by row across the workers (PyTorch DTensor,
            ``Shard(0)``), each worker holding and updating ``1/W`` of the rows and their Adam
            moments; head layers stay replicated. Steps look up the rows their batch reads
            from their owners and reduce gradients over the workers' union of rows; the
            trained model, metrics and checkpoints are the replicated run's (see
            ``invlearn_ray.optim.sharded_tables`` and README, "Sharded tables"). Needs a
            backbone whose tables are row gathers (mf, gmf, biased_mf, neumf), eager steps,
            and for IG the ``batch`` direction with the ``sgd`` or ``sign`` rule.
        batch_size: labeled rows per step (the paper: 1024).
        epochs: maximum epochs; early stopping may end sooner.
        patience: epochs without a better validation metric before stopping.
        select_metric: validation metric for model selection and early stopping. A ranking
            metric, not BCE: selecting by validation BCE picks useless epoch-0 models for the NS
            family (method.md §5).
        seed: seeds initialisation, shuffling and sampling.
        sampling_rate: unlabeled items sampled per labeled training row (the paper: 1).
        popularity_prior: [w] the ``popularity`` scorer's prior strength: pseudo-rows at the
            global positive rate added to each item's labeled rows
            (:mod:`invlearn_ray.methods.popularity`).
        popularity_play_weight: [λ] the ``popularity`` scorer's weight of log(1 + play count).
        observed_weight: ``watched_positive``'s weight of an observed-unlabeled row taken as a
            positive (labeled rows weigh 1).
        unlabeled_source: where NS/IDL/IG's unlabeled rows come from: ``sampled``
            non-interacted items (the paper), ``observed`` unclear interactions, or ``both``.
            The default is the paper's, the one source every dataset has. In the tuned
            label-density sweep (ML-100K and synthetic, GMF, 10% and 3% of labels) every
            winning IG configuration read observed rows (``both`` or ``observed``) with
            α/γ of 10-100: ``pipelines/configs/sparse_ig.yaml``.
        max_drop, num_gradual: T-CE drop-rate schedule (DenoisingRec: 0.2 over 30k steps).
        beta: [β] R-CE exponent.
        n_candidates: [M] uniform candidates per row for DNS/SRNS.
        srns_alpha, srns_window, srns_warmup_epochs: SRNS variance weight, score-history length
            and the epochs over which α is phased in.
        n_negatives: sampled negatives per positive for the softmax losses.
        tau: [τ] SL temperature. tau_pos, tau_neg: [τ1, τ2] BSL temperatures.
        neg_weight: [w < 0] weight of explicit dislikes in the negative-feedback losses.
        eps: [ε] smoothing of the negative-weight CE.
        focal_gamma: focal exponent of ``sl_focal``.
        dual_lr_ratio: [α/γ] IG candidate step size relative to ``lr`` (the paper: 0.1).
        step_rule: IG's ``step(g)``: ``sgd`` | ``sign`` | ``adam`` (see DualDirection).
        meta_steps: IG meta steps per epoch: one per training-test batch (``train_test``, as
            the released code: every labeled row, training-train or training-test, is used once
            per epoch) or one per training-train batch (``train_train``, Algorithm 1's two loops
            over t = 1..T, which revisits the 10% training-test slice ~9x per epoch and overfits
            the judge). The epoch's unlabeled rows are spread over the meta steps. Default
            measured on the ML-100K split, validation, seed 0: GMF (lr 0.01) AUC/GAUC 0.795 /
            0.715 with ``train_test`` vs 0.761 / 0.690 with ``train_train``; at 10% labels NeuMF
            0.727 / 0.653 vs 0.702 / 0.630.
        ig_schedule: ``sequential`` (an epoch's supervised steps, then its meta steps, as
            Algorithm 1) or ``interleaved`` (alternate them).
        warmup_epochs: supervised-only epochs before the first meta step.
        ig_base: the objective of IG's supervised (training-train) steps: ``none`` = BCE on
            labeled rows, as Algorithm 1; any other non-IG method puts IG's meta steps on top
            of that method (e.g. ``idl`` or ``bsl``). The meta step's test loss stays BCE.
        test_batch_size: training-test rows per meta step.
        idl_temperature: exponent generalisation of the IDL weights (1 = paper eq. 4); IG's
            dual gradient uses it too.
        ig_direction: what IG's candidates move along: ``batch`` (Algorithm 1: the batch's
            dual-loss gradient; one direct/none/inverse choice per meta step) or ``per_row``
            (each unlabeled row's dual-loss gradient signed by its first-order alignment with
            the training-test gradient, so rows are flipped one by one; see
            :func:`~invlearn_ray.methods.inverse_gradient.aligned_dual_gradient`).
        ig_judge: IG's training-test slice: ``fixed`` (the dataset's, as Algorithm 1) or
            ``rotating`` (every epoch the labeled training rows are split afresh, seeded, into
            the same sizes, so every labeled row is fitted in some epochs and judges in
            others). Also sets ``none_ig_steps``' batches, which follow IG's.
        eval_user_batch: users per batch in full-catalogue evaluation (memory: that many ×
            n_items scores).
        full_ranking: how the test split's full-catalogue Recall/NDCG@20 is computed:
            ``exact`` (every test user), ``sampled_users`` (a seeded sample of
            ``full_ranking_users`` users, each ranked against the whole catalogue; metrics named
            ``sampled_users_*``, with standard errors) or ``auto`` (the default: exact for the
            factorized backbones — MF, GMF, LightGCN — at any size, a sample for NeuMF when the
            test split has more users than the sample holds). Measured on 2 cores
            (``benchmarks/eval_speed.py``), an exact NeuMF ranking takes the time of 3–6 IG
            epochs at ML-1M size and ~50 min at Micro-Video size; the 1000-user sample ~5 s and
            ~33 s, which keeps evaluation a small share of a run. See
            :data:`~invlearn_ray.evaluation.evaluate.FULL_RANKING_PROTOCOLS`.
        full_ranking_users: the user sample's size. 1000 users put the standard error of a
            per-user mean near ``sd / 32`` (the run reports it); the cost is 1000 × n_items
            pairs through the head.
        compile: ``torch.compile`` the step's loss functions (costs seconds once; worth it for
            long runs and GPU benchmarks).
        cuda_graphs: replay each step as a CUDA graph (GPU only; removes launch overhead).
        max_train_loss: an epoch whose mean training loss is non-finite or above this stops
            the run with ``TrainingDiverged``; no model is published. One-sided: losses
            unbounded below (BSL on raw scores falls to -1e5 and beyond) are bounded through
            their weights instead.
        max_weight: likewise for the largest absolute parameter value after an epoch. Both
            are checked once per epoch (one host sync; steps and CUDA graphs are untouched).
            Measured on ML-100K (``benchmarks/divergence_bounds.py``; every method at lr 1e-3
            and 3e-2, the ends of the tuning spaces' range, and IG at its largest candidate
            steps): healthy runs reach an epoch loss of at most 2.9 (a softmax loss at
            initialisation, log 17) and weights of at most 18 in 30 epochs (SL; BSL's runaway
            scores 103), while lr 10 gives losses of 2.7e3-6e7 and lr 1e6 of 1e13 to inf.
    """

    method: str = "none"
    backbone: str = "gmf"
    embedding_dim: int = 32
    init_scale: float = 1.0
    bias_init: str = "zero"
    mlp_layers: int = 3
    gcn_layers: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_optimizer: str = "adam"
    shard_tables: bool = False
    batch_size: int = 1024
    epochs: int = 30
    patience: int = 5
    select_metric: str = "gauc"
    seed: int = 0
    sampling_rate: int = 1
    popularity_prior: float = 5.0
    popularity_play_weight: float = 0.0
    observed_weight: float = 1.0
    unlabeled_source: str = "sampled"
    max_drop: float = 0.2
    num_gradual: int = 30000
    beta: float = 0.25
    n_candidates: int = 10
    srns_alpha: float = 1.0
    srns_window: int = 5
    srns_warmup_epochs: float = 0.0
    n_negatives: int = 16
    tau: float = 0.2
    tau_pos: float = 0.2
    tau_neg: float = 0.2
    neg_weight: float = -1.0
    eps: float = 1e-6
    focal_gamma: float = 2.0
    dual_lr_ratio: float = 0.1
    step_rule: str = "sign"
    meta_steps: str = "train_test"
    ig_schedule: str = "sequential"
    warmup_epochs: int = 0
    ig_base: str = "none"
    test_batch_size: int = 1024
    idl_temperature: float = 1.0
    ig_direction: str = "batch"
    ig_judge: str = "fixed"
    eval_user_batch: int = 1024
    full_ranking: str = "auto"
    full_ranking_users: int = 1000
    compile: bool = False
    cuda_graphs: bool = False
    max_train_loss: float = 100.0
    max_weight: float = 1000.0

    def __post_init__(self) -> None:
        choices = {
            "method": METHODS,
            "backbone": tuple(BACKBONES),
            "unlabeled_source": UNLABELED_SOURCES,
            "select_metric": SELECT_METRICS,
            "step_rule": STEP_RULES,
            "meta_steps": META_STEP_COUNTS,
            "ig_schedule": IG_SCHEDULES,
            "ig_direction": IG_DIRECTIONS,
            "ig_judge": IG_JUDGES,
            "bias_init": BIAS_INITS,
            "ig_base": BASE_METHODS,
            "full_ranking": FULL_RANKING_PROTOCOLS,
            "embedding_optimizer": EMBEDDING_OPTIMIZERS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"TrainConfig.{name} = {getattr(self, name)!r} is not one of {list(valid)}"
                )
        positive = ("embedding_dim", "batch_size", "epochs", "n_candidates", "n_negatives")
        positive += ("test_batch_size", "lr", "tau", "tau_pos", "tau_neg", "eval_user_batch")
        positive += ("full_ranking_users", "init_scale", "idl_temperature")
        positive += ("max_train_loss", "max_weight")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = ("patience", "sampling_rate", "warmup_epochs", "dual_lr_ratio", "eps")
        non_negative += ("popularity_prior", "popularity_play_weight", "observed_weight")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        static = (
            self.method in STATIC_STEP_METHODS and self.supervised_method in STATIC_STEP_METHODS
        )
        if (self.compile or self.cuda_graphs) and not static:
            raise ValueError(
                f"compile/cuda_graphs support methods {list(STATIC_STEP_METHODS)}, "
                f"not {self.method!r}; run it without them"
            )
        if self.embedding_optimizer == "lazy_adam":
            if BACKBONES[self.backbone].table_index is None:
                raise ValueError(
                    f"embedding_optimizer='lazy_adam' needs a backbone whose tables are row "
                    f"gathers ({sorted(n for n, b in BACKBONES.items() if b.table_index)}); "
                    f"{self.backbone!r} propagates whole tables: use embedding_optimizer='adam'"
                )
            if self.compile or self.cuda_graphs:
                raise ValueError(
                    "embedding_optimizer='lazy_adam' updates the rows each batch touches, a "
                    "shape compile/cuda_graphs cannot capture: turn them off or use 'adam'"
                )
            if self.ig_direction == "per_row":
                raise ValueError(
                    "ig_direction='per_row' steps on dense gradients, which "
                    "embedding_optimizer='lazy_adam' does not take: use 'adam'"
                )
        if self.shard_tables:
            self._check_shardable()
        if self.bias_init == "popularity" and not BACKBONES[self.backbone].learns_item_bias:
            raise ValueError(
                f"bias_init='popularity' sets a backbone's item biases, and {self.backbone!r} "
                f"has none; use bias_init='zero' or one of "
                f"{sorted(n for n, b in BACKBONES.items() if b.learns_item_bias)}"
            )
        if self.ig_direction == "per_row" and (self.compile or self.cuda_graphs):
            raise ValueError(
                "ig_direction='per_row' runs eagerly: turn compile and cuda_graphs off"
            )
        if self.ig_judge == "rotating" and method_spec(self.ig_base).candidates == "fixed_pool":
            raise ValueError(
                f"ig_judge='rotating' re-splits the fitted rows every epoch, but ig_base "
                f"{self.ig_base!r} keeps a candidate pool per fitted row; use ig_judge='fixed'"
            )
        if self.needs_unlabeled and self.sampling_rate == 0 and self.unlabeled_source == "sampled":
            raise ValueError(
                f"method {self.method!r} learns from unlabeled rows: sampling_rate must be >= 1 "
                "(or set unlabeled_source='observed')"
            )

    def _check_shardable(self) -> None:
        """Refuse ``shard_tables`` where it cannot apply, with the reason and the way out."""
        reason = None
        if BACKBONES[self.backbone].table_index is None:
            reason = f"backbone {self.backbone!r} propagates whole tables (not row gathers)"
        elif self.compile or self.cuda_graphs:
            reason = "compiled / CUDA-graphed steps need shapes independent of the batch's rows"
        elif not method_spec(self.method).trains:
            reason = f"method {self.method!r} trains no tables"
        elif self.method == "ig" and self.ig_direction == "per_row":
            reason = "ig_direction='per_row' takes table-sized gradients on every worker"
        elif self.method == "ig" and self.step_rule == "adam":
            reason = "step_rule='adam' keeps table-sized direction moments on every worker"
        elif self.bias_init == "popularity":
            reason = "bias_init='popularity' writes whole item-bias tables at the start"
        if reason:
            raise ValueError(f"shard_tables cannot apply: {reason}; turn shard_tables off")

    @property
    def dual_lr(self) -> float:
        """[α] the IG candidate step size."""
        return self.dual_lr_ratio * self.lr

    @property
    def supervised_method(self) -> str:
        """The method whose objective the supervised steps minimise (IG: its ``ig_base``)."""
        return self.ig_base if self.method == "ig" else self.method

    @property
    def needs_unlabeled(self) -> bool:
        return method_spec(self.method).needs_unlabeled

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise with the list of valid ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})
