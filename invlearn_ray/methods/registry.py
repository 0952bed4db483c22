"""Every training method's facts in one table: one :class:`MethodSpec` per method.

Everything else that depends on the method is derived from :data:`METHOD_SPECS`: the names
``TrainConfig`` accepts (:data:`METHODS`), the methods ``compile``/``cuda_graphs`` support
(:data:`STATIC_STEP_METHODS`), which rows a batch carries, the objective the trainer minimises
(:func:`build_objective`), the benchmark's table names and the tuning space of each method.

Adding a method is one :class:`MethodSpec` below, its objective (a factory in
:mod:`invlearn_ray.methods.objectives`) and its space file in ``tune_spaces/``. A method that does
not train at all (e.g. a popularity scorer) is a spec with ``trains=False`` and no objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from invlearn_ray.methods import objectives as obj

if TYPE_CHECKING:
    from invlearn_ray.training.config import TrainConfig

ObjectiveFactory = Callable[["TrainConfig", int, torch.device], obj.Objective]
"""``(config, n_labeled_rows, device) -> Objective``: what a method's supervised steps minimise
(``n_labeled_rows`` sizes per-row state such as SRNS's score history)."""

CANDIDATE_DRAWS = ("per_step", "fixed_pool")


@dataclass(frozen=True)
class MethodSpec:
    """What the code needs to know about one method.

    Attributes:
        name: the ``TrainConfig.method`` value (``ig``).
        display_name: the name tables and figures show (``IG``, ``SL + ε-CE``).
        summary: one line: what the method minimises.
        objective: builds its per-batch objective; None when it has none of its own (IG's
            supervised steps minimise its ``ig_base``'s objective; a method that does not train
            has none).
        space_file: its tuning space in ``tune_spaces/`` (several methods may share one).
        trains: False for a scorer that is computed, not trained (no objective, no epochs).
        needs_unlabeled: learns from unlabeled rows (sampled or observed), so its supervised
            batches carry them (IG's meta steps read them).
        static_step: its step has no step-dependent constants or host syncs, so
            ``torch.compile`` and CUDA graphs support it (T-CE's drop rate changes every step;
            DNS/SRNS/softmax batches vary in shape).
        sampled_negatives: each labeled row gets ``n_negatives`` sampled items (softmax family).
        candidates: hard-negative candidates per labeled row: ``per_step`` (drawn for every
            step, DNS) or ``fixed_pool`` (drawn once per run, SRNS); None for other methods.
        idl_weights: learns IDL weights on unlabeled rows; their histograms are recorded.
        observed_rows: its batches always carry the observed-unlabeled rows, whatever
            ``unlabeled_source`` says (which then only decides whether sampled rows join):
            the rows are what the method is about (``watched_positive``).
        ig_batches: plans its epochs as IG does: supervised batches over training-train, then
            one step per batch of the training-test slice — IG's meta step, or, for a method
            without one (``none_ig_steps``), a plain supervised step on those labeled rows, so
            it takes exactly IG's number of optimiser steps per epoch on the same labeled data.
        reads: the method-specific ``TrainConfig`` fields it reads (those of
            :data:`METHOD_FIELDS`); every other field is read by every method. IG also reads
            its ``ig_base``'s fields (:func:`unread_settings`).
    """

    name: str
    display_name: str
    summary: str
    objective: ObjectiveFactory | None
    space_file: str
    trains: bool = True
    needs_unlabeled: bool = False
    static_step: bool = False
    sampled_negatives: bool = False
    candidates: str | None = None
    idl_weights: bool = False
    observed_rows: bool = False
    ig_batches: bool = False
    reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.candidates not in (None, *CANDIDATE_DRAWS):
            raise ValueError(
                f"MethodSpec {self.name!r}: candidates must be None or one of {CANDIDATE_DRAWS}"
            )
        if not self.trains and self.objective is not None:
            raise ValueError(
                f"MethodSpec {self.name!r}: trains=False, so it has no objective (got one)"
            )


def _fixed(objective: obj.Objective) -> ObjectiveFactory:
    """The factory of an objective that needs no options."""
    return lambda config, n_rows, device: objective


def _configured(make: Callable[[TrainConfig], obj.Objective]) -> ObjectiveFactory:
    """The factory of an objective built from the run's options."""
    return lambda config, n_rows, device: make(config)


_SOFTMAX = _configured(obj.make_softmax_objective)
_UNLABELED = ("sampling_rate", "unlabeled_source")
_IG_STEPS = ("meta_steps", "ig_schedule", "warmup_epochs", "test_batch_size", "ig_judge")
"""How IG's epochs are planned, read by every method with ``ig_batches``."""
_POPULARITY = ("popularity_prior", "popularity_play_weight")
_EXPLICIT_NEGATIVE_SPACE = "explicit_negative.yaml"

METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="none",
            display_name="None",
            summary="BCE on labeled rows only",
            objective=_fixed(obj.none_objective),
            space_file="none.yaml",
            static_step=True,
            reads=(),
        ),
        MethodSpec(
            name="ns",
            display_name="NS",
            summary="+ sampled unlabeled rows as negatives",
            objective=_fixed(obj.ns_objective),
            space_file="ns.yaml",
            needs_unlabeled=True,
            static_step=True,
            reads=_UNLABELED,
        ),
        MethodSpec(
            name="tce",
            display_name="T-CE",
            summary="NS with truncated BCE (DenoisingRec T-CE)",
            objective=_configured(obj.make_tce_objective),
            space_file="tce.yaml",
            needs_unlabeled=True,
            reads=(*_UNLABELED, "max_drop", "num_gradual"),
        ),
        MethodSpec(
            name="rce",
            display_name="R-CE",
            summary="NS with reweighted BCE (DenoisingRec R-CE)",
            objective=_configured(obj.make_rce_objective),
            space_file="rce.yaml",
            needs_unlabeled=True,
            static_step=True,
            reads=(*_UNLABELED, "beta"),
        ),
        MethodSpec(
            name="dns",
            display_name="DNS",
            summary="+ the highest-scored of M candidates as the negative",
            objective=_fixed(obj.dns_objective),
            space_file="dns.yaml",
            candidates="per_step",
            reads=("n_candidates",),
        ),
        MethodSpec(
            name="srns",
            display_name="SRNS",
            summary="+ a high-variance, high-score candidate as the negative",
            objective=obj.SRNSObjective,
            space_file="srns.yaml",
            candidates="fixed_pool",
            reads=("n_candidates", "srns_alpha", "srns_window", "srns_warmup_epochs"),
        ),
        MethodSpec(
            name="idl",
            display_name="IDL",
            summary="+ the inverse dual loss on unlabeled rows",
            objective=_configured(obj.make_idl_objective),
            space_file="idl.yaml",
            needs_unlabeled=True,
            static_step=True,
            idl_weights=True,
            reads=(*_UNLABELED, "idl_temperature"),
        ),
        MethodSpec(
            name="ig",
            display_name="IG",
            summary="Inverse Gradient: IDL steps judged on training-test data (Algorithm 1)",
            objective=None,
            space_file="ig.yaml",
            needs_unlabeled=True,
            static_step=True,
            idl_weights=True,
            ig_batches=True,
            reads=(
                *_UNLABELED,
                *_IG_STEPS,
                "dual_lr_ratio",
                "step_rule",
                "ig_base",
                "idl_temperature",
                "ig_direction",
            ),
        ),
        MethodSpec(
            name="popularity",
            display_name="Popularity",
            summary="no training: the item's smoothed labeled-positive rate and play count",
            objective=None,
            space_file="popularity.yaml",
            trains=False,
            reads=_POPULARITY,
        ),
        MethodSpec(
            name="none_ig_steps",
            display_name="None (IG steps)",
            summary="BCE on labeled rows only, with IG's optimiser steps per epoch",
            objective=_fixed(obj.none_objective),
            space_file="none_ig_steps.yaml",
            static_step=True,
            ig_batches=True,
            reads=_IG_STEPS,
        ),
        MethodSpec(
            name="watched_positive",
            display_name="Watched = positive",
            summary="+ every observed-unlabeled row as a weighted positive",
            objective=_configured(obj.make_watched_positive_objective),
            space_file="watched_positive.yaml",
            needs_unlabeled=True,
            static_step=True,
            observed_rows=True,
            reads=(*_UNLABELED, "observed_weight"),
        ),
        MethodSpec(
            name="sl",
            display_name="SL",
            summary="sampled softmax loss on positives",
            objective=_SOFTMAX,
            space_file="sl.yaml",
            sampled_negatives=True,
            reads=("n_negatives", "tau"),
        ),
        MethodSpec(
            name="bsl",
            display_name="BSL",
            summary="bilateral softmax loss on positives",
            objective=_SOFTMAX,
            space_file="bsl.yaml",
            sampled_negatives=True,
            reads=("n_negatives", "tau_pos", "tau_neg"),
        ),
        MethodSpec(
            name="sl_epsce",
            display_name="SL + ε-CE",
            summary="SL + ε-smoothed negative-weight CE on explicit dislikes",
            objective=_SOFTMAX,
            space_file=_EXPLICIT_NEGATIVE_SPACE,
            sampled_negatives=True,
            reads=("n_negatives", "tau", "neg_weight", "eps"),
        ),
        MethodSpec(
            name="sl_complement",
            display_name="SL + complement",
            summary="SL + complement likelihood log(1 − p) on explicit dislikes",
            objective=_SOFTMAX,
            space_file=_EXPLICIT_NEGATIVE_SPACE,
            sampled_negatives=True,
            reads=("n_negatives", "tau", "neg_weight"),
        ),
        MethodSpec(
            name="sl_focal",
            display_name="SL + focal",
            summary="SL + focal-modulated complement likelihood on explicit dislikes",
            objective=_SOFTMAX,
            space_file=_EXPLICIT_NEGATIVE_SPACE,
            sampled_negatives=True,
            reads=("n_negatives", "tau", "neg_weight", "focal_gamma"),
        ),
    )
}
"""Every method, in table order."""

METHODS = tuple(METHOD_SPECS)
STATIC_STEP_METHODS = tuple(name for name, spec in METHOD_SPECS.items() if spec.static_step)
"""The methods ``compile`` and ``cuda_graphs`` support (see ``MethodSpec.static_step``)."""
BASE_METHODS = tuple(
    name
    for name, spec in METHOD_SPECS.items()
    if spec.trains and spec.objective is not None and not spec.ig_batches
)
"""Methods with an objective of their own and plain epochs: the choices of IG's ``ig_base``."""


METHOD_FIELDS = frozenset(field for spec in METHOD_SPECS.values() for field in spec.reads)
"""``TrainConfig`` fields that only some methods read (see ``MethodSpec.reads``)."""


class UnknownMethodError(ValueError):
    """A method name that is not in :data:`METHOD_SPECS`; the message lists the valid ones."""


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``.

    Raises:
        UnknownMethodError: ``name`` is not a method.
    """
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; valid: {list(METHODS)}") from None


def build_objective(config: TrainConfig, n_rows: int, device: torch.device) -> obj.Objective:
    """The objective of the supervised steps (IG's: that of its ``ig_base``, *None* by default).

    Raises:
        UnknownMethodError: the method is not in :data:`METHOD_SPECS`.
        ValueError: the method has no objective of its own (it does not train).
    """
    spec = method_spec(config.supervised_method)
    if spec.objective is None:
        raise ValueError(f"method {spec.name!r} has no objective to train ({spec.summary})")
    return spec.objective(config, n_rows, device)


def unread_settings(method: str, settings: dict[str, object]) -> list[str]:
    """The names in ``settings`` (field → value) that a run of ``method`` would ignore.

    A field is read if the method's spec (or, for IG, its ``ig_base``'s) lists it, or if it is
    no method's own; the popularity scorer's fields are also read by ``bias_init=popularity``.
    Time: one set lookup per name.
    """
    spec = method_spec(method)
    read = set(spec.reads)
    if spec.name == "ig":
        read |= set(method_spec(str(settings.get("ig_base", "none"))).reads)
    if settings.get("bias_init") == "popularity":
        read |= set(_POPULARITY)
    return sorted(name for name in settings if name in METHOD_FIELDS and name not in read)


def readers_of(field: str) -> list[str]:
    """The methods that read ``field`` (every method if it is none's own)."""
    if field not in METHOD_FIELDS:
        return list(METHODS)
    return [name for name, spec in METHOD_SPECS.items() if field in spec.reads]
