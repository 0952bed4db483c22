"""How a study draws its configurations: TPE or random search, and the study's own seed.

* **TPE** (Optuna's Tree-structured Parzen Estimator, through Ray Tune's ``OptunaSearch``):
  after a random start (Optuna's default, 10 trials) each new trial samples where the trials
  so far scored well. It is told each trial's *best* epoch score (:class:`BestEpochOptunaSearch`),
  the score selection compares, not the score of the epoch ASHA happened to stop it at.
  Concurrent trials are drawn with Optuna's *constant liar* (a running trial counts as a bad
  one), so two trials started together do not sample the same spot.
* **Random** search is Tune's ``BasicVariantGenerator`` over :meth:`StudySpace.param_space`.

The TPE space is define-by-run (:class:`TpeSpace`): ``loguniform`` ranges are sampled in log
space, ``randint`` includes both ends, and a choice whose values are valid only beside some
values of another field (``bias_init='popularity'`` needs ``backbone='biased_mf'``) is drawn
after the fields it depends on, and only when more than one of its values is valid then —
otherwise it takes its one valid value, and TPE never spends a trial on a config that cannot
train. (Random search keeps Tune's independent draws; such a trial fails with its reason.)

Seeds: :func:`study_seed` mixes the budget's base seed with the study's identity (space,
methods, dataset, label fraction, backbone), so every study of a benchmark draws its own
configurations while the same study run again draws the same ones. Both searchers save their
state with Tune's experiment, so a resumed study continues its search (Tune restores the
searcher with ``Tuner.restore``): TPE keeps every trial it was told about.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any

import optuna
from ray.tune.experiment import Experiment
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from invlearn_ray.data.hashing import stream_seed
from invlearn_ray.experiments.spaces import SpaceError, StudySpace
from invlearn_ray.experiments.tune.budget import StudyBudget
from invlearn_ray.training.config import TrainConfig

_SEED_BITS = 32  # numpy's RandomState (random search) takes seeds below 2**32


def study_seed(space: StudySpace, dataset: str, label_fraction: float, base_seed: int = 0) -> int:
    """The search seed of one study: a stable hash of what the study is, under ``base_seed``.

    Args:
        space: the study's space, after pinning (its name, methods and backbone count).
        dataset: the dataset's name (its manifest's ``name``).
        label_fraction: the share of training labels the dataset keeps.
        base_seed: the budget's ``search_seed``.

    Returns:
        A seed in ``[0, 2**32)``: equal for equal arguments in any process (SHA-256, not
        Python's salted ``hash``), different when any of them differs.
    """
    identity = {
        "space": space.name,
        "methods": list(space.methods),
        "backbone": space.fixed.get("backbone", "searched" if "backbone" in space.search else ""),
        "dataset": dataset,
        "label_fraction": float(label_fraction),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).digest()
    salt = int.from_bytes(digest[:8], "little")
    return stream_seed(base_seed, salt) % (1 << _SEED_BITS)


def _valid(values: dict[str, Any]) -> bool:
    try:
        TrainConfig.from_dict(values)
    except ValueError:
        return False
    return True


class TpeSpace:
    """A :class:`StudySpace` as an Optuna define-by-run function (see the module docstring).

    Picklable (it holds only the space): Tune saves it with the searcher's state.

    Raises:
        SpaceError: a choice would keep some but not all of its values (two or more) beside a
            value of another field; Optuna cannot change a choice's values between trials.
    """

    def __init__(self, space: StudySpace) -> None:
        self.space = space
        self.base = {**space.fixed, "select_metric": space.select_metric}
        self.dependent = tuple(
            name
            for name, dist in space.search.items()
            if dist.kind == "choice"
            and not all(_valid({**self.base, name: value}) for value in dist.args)
        )
        self._check_dependent()

    def _check_dependent(self) -> None:
        for name in self.dependent:
            values = self.space.search[name].args
            for other, dist in self.space.search.items():
                if other == name:
                    continue
                for probe in dist.probe_values():
                    valid = [v for v in values if _valid({**self.base, other: probe, name: v})]
                    if 1 < len(valid) < len(values):
                        raise SpaceError(
                            f"{self.space.source}: TPE cannot search {name}: beside "
                            f"{other}={probe!r} only {valid} of {list(values)} are valid, and "
                            "an Optuna choice keeps its values in every trial; split the space "
                            "or use random search"
                        )

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        drawn: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        independent = [name for name in self.space.search if name not in self.dependent]
        for name in [*independent, *self.dependent]:
            dist = self.space.search[name]
            if dist.kind == "choice":
                values = dist.args
                if name in self.dependent:
                    values = tuple(
                        v for v in values if _valid({**self.base, **drawn, **constants, name: v})
                    )
                if len(values) == 1:
                    constants[name] = values[0]
                else:
                    drawn[name] = trial.suggest_categorical(name, list(values))
            elif dist.kind == "randint":
                drawn[name] = trial.suggest_int(name, *dist.args)  # both ends included
            else:
                low, high = dist.args
                drawn[name] = trial.suggest_float(name, low, high, log=dist.kind == "loguniform")
        return constants


class BestEpochOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that scores a trial by its best epoch (what selection compares), not its
    last: a trial ASHA stops, or one past its best epoch, is told the best score it reached.
    Non-finite scores (an undefined GAUC) are never reported; a trial with none is pruned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._best: dict[str, float] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if not _finite(value):
            return
        best = self._best.get(trial_id)
        sign = 1.0 if self.mode == "max" else -1.0
        if best is None or sign * value > sign * best:
            self._best[trial_id] = float(value)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        best = self._best.pop(trial_id, None)
        told = None if best is None else {**(result or {}), self.metric: best}
        super().on_trial_complete(trial_id, told, error)

    @property
    def told_trials(self) -> int:
        """Trials Optuna has been told the outcome of (its state, saved with the study)."""
        states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        return sum(t.state not in states for t in self._ot_study.get_trials(deepcopy=False))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tpe_searcher(space: StudySpace, seed: int) -> BestEpochOptunaSearch:
    """The TPE searcher of a study (not yet limited to the study's concurrency)."""
    with warnings.catch_warnings():
        # constant_liar is marked experimental in Optuna; it is what concurrent trials need.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial from Optuna
    return BestEpochOptunaSearch(
        space=TpeSpace(space), metric=space.metric, mode=space.mode, sampler=sampler
    )


def search_algorithm(
    space: StudySpace, budget: StudyBudget, seed: int
) -> tuple[Searcher | BasicVariantGenerator, dict[str, Any]]:
    """Tune's ``search_alg`` for a study and the ``param_space`` that goes with it (empty for
    TPE, whose space is its own).

    Both limit concurrency themselves: Tune ignores ``max_concurrent_trials`` beside a search
    algorithm (and says so on every study).
    """
    if budget.search_algorithm == "random":
        generator = BasicVariantGenerator(random_state=seed, max_concurrent=budget.concurrency)
        return generator, space.param_space()
    return ConcurrencyLimiter(tpe_searcher(space, seed), budget.concurrency), {}


def first_draws(space: StudySpace, search: str, seed: int, count: int) -> list[dict[str, Any]]:
    """The first ``count`` configurations a study's searcher draws, without Ray (what a study
    starts with before any trial has reported; tests compare studies with it).

    Args:
        space: the study's space.
        search: ``tpe`` or ``random``.
        seed: the study's seed (:func:`study_seed`).
        count: how many draws.
    """
    if search == "tpe":
        searcher = tpe_searcher(space, seed)
        return [searcher.suggest(f"draw_{index}") for index in range(count)]
    generator = BasicVariantGenerator(random_state=seed)
    generator.add_configurations(
        Experiment("draws", run=_no_trainable, config=space.param_space(), num_samples=count)
    )
    return [generator.next_trial().config for _ in range(count)]


def _no_trainable(config: dict[str, Any]) -> None:
    """The trainable of :func:`first_draws`' experiment, which never runs."""
