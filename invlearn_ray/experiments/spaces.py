"""Tuning spaces: a person-readable YAML file per study, validated into a :class:`StudySpace`.

A space file (``tune_spaces/*.yaml``) says what one study tunes::

    description: Inverse Gradient (paper Algorithm 1)
    metric: valid/gauc          # validation metric Tune selects on (never a test metric)
    mode: max
    fixed:                      # TrainConfig fields every trial shares
      method: ig
    search:                     # TrainConfig fields Tune samples, one distribution each
      lr: {loguniform: [1.0e-5, 1.0e-2]}
      dual_lr_ratio: {choice: [0.1, 1, 10, 50, 100]}

Distributions: ``loguniform: [low, high]`` and ``uniform: [low, high]`` (floats),
``randint: [low, high]`` (integers, *both ends included*, unlike ``tune.randint``) and
``choice: [value, ...]``. There is no grid: every study draws exactly ``trials`` samples, so
every method gets the same tuning budget whatever its space looks like.

Everything is checked when the file is read, not when a trial crashes an hour later: unknown
top-level keys, unknown ``TrainConfig`` fields (listing the valid ones), wrong value types,
empty or reversed ranges, duplicate keys, and values ``TrainConfig`` itself rejects. Errors are
:class:`SpaceError` naming the file, the line and the key. Two fields belong to the study, not
the space: ``seed`` (every tuning trial uses seed 0; final runs use seeds 0..n-1) and
``select_metric`` (set from ``metric``, so the epoch a trial keeps and the metric Tune compares
are the same one).

Files are read with :func:`invlearn_ray.config_io.load_yaml_with_lines` (so ``1e-4`` is a
float, as the obvious spelling suggests) and values typed by its ``check_field_value``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invlearn_ray.config_io import (
    TRAIN_FIELDS,
    ConfigFileError,
    KeyPath,
    Locator,
    check_field_value,
    field_type,
    load_yaml_with_lines,
)
from invlearn_ray.methods.registry import METHODS
from invlearn_ray.training.config import SELECT_METRICS, TrainConfig

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"
"""The space files shipped with the project (one per method family)."""
TOP_LEVEL_KEYS = ("description", "metric", "mode", "fixed", "search")
REQUIRED_KEYS = ("metric", "search")
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
STUDY_OWNED_FIELDS = {
    "seed": "every tuning trial uses seed 0 (final runs use seeds 0..n-1)",
    "select_metric": "it is set from the space's 'metric', so trials keep the epoch Tune compares",
}
METRIC_PREFIX = "valid/"
TRIAL_SEED = 0
"""Seed of every tuning trial: configurations are compared on equal initialisation/sampling."""
EDGE_MARGIN = 0.1
"""A best value within this share of a searched range's span from an end is at its edge
(:meth:`Distribution.edge`)."""


class SpaceError(ConfigFileError):
    """A space file (or mapping) is malformed; the message names the file, line and key."""


def _locator(source: str, lines: dict[KeyPath, int]) -> Locator:
    return Locator(source, lines, SpaceError)


@dataclass(frozen=True)
class Distribution:
    """One searched field: a kind from :data:`DISTRIBUTIONS` and its arguments."""

    kind: str
    args: tuple[Any, ...]

    def probe_values(self) -> tuple[Any, ...]:
        """Values that must each make a valid ``TrainConfig`` (range ends, every choice)."""
        return self.args

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.args
        low, high = self.args
        if self.kind == "randint" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        return isinstance(value, int | float) and low <= value <= high

    def to_tune(self) -> Any:
        """The Ray Tune search-space object (imported here: spaces load without Ray)."""
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "randint":
            low, high = self.args
            return tune.randint(low, high + 1)  # tune's upper end is exclusive; ours is not
        return tune.choice(list(self.args))

    def to_dict(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.args)}

    def edge(self, value: Any, margin: float = EDGE_MARGIN) -> str | None:
        """``"low"``/``"high"`` when ``value`` sits at that end of the range, else None.

        A best trial at a range's end says the optimum may lie outside it, so the study was
        too narrow for that field (issue 13: "the search ranges wide enough that the best
        trial is not at a range's edge"). Ranges: within ``margin`` of the span from an end,
        measured in log space for ``loguniform``. Choices: the smallest or largest of three or
        more numbers; unordered choices (strings, booleans) and two-value choices have no
        edge worth flagging. A lower end of 0 is not flagged either: it is the knob switched
        off (no weight decay, no play-count term), a bound no range can widen past.
        """
        if self.kind == "choice":
            numbers = [
                a for a in self.args if isinstance(a, int | float) and not isinstance(a, bool)
            ]
            if len(numbers) < 3 or len(numbers) != len(self.args) or value not in numbers:
                return None
            low, high = min(numbers), max(numbers)
            end = "low" if value == low else "high" if value == high else None
        else:
            low, high = self.args
            if self.kind == "loguniform":
                position = math.log(value / low) / math.log(high / low)
            else:
                position = (value - low) / (high - low)
            end = "low" if position <= margin else "high" if position >= 1 - margin else None
        return None if end == "low" and low == 0 else end


def _parse_distribution(name: str, spec: Any, at: Locator, path: KeyPath) -> Distribution:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise at.error(
            path,
            f"give exactly one distribution as a mapping, e.g. {{loguniform: [1.0e-4, 1.0e-2]}} "
            f"or {{choice: [a, b]}}; valid kinds: {list(DISTRIBUTIONS)}",
        )
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise at.error(
            path + (kind,), f"unknown distribution {kind!r}; valid: {list(DISTRIBUTIONS)}"
        )
    where = path + (kind,)
    if not isinstance(args, list) or not args:
        raise at.error(where, f"{kind} takes a non-empty list, got {args!r}")
    try:
        values = tuple(check_field_value(name, value) for value in args)
    except ValueError as error:
        raise at.error(where, f"TrainConfig.{name} {error}") from None
    if kind == "choice":
        if len(set(values)) != len(values):
            raise at.error(where, f"choice lists a value twice: {list(args)}")
        return Distribution(kind, values)
    if len(values) != 2:
        raise at.error(where, f"{kind} takes [low, high], got {list(args)}")
    low, high = values
    expected = field_type(name)
    if kind == "randint" and expected is not int:
        raise at.error(where, f"randint needs an integer field; {name} is a {expected.__name__}")
    if kind in ("loguniform", "uniform") and expected is not float:
        raise at.error(
            where, f"{kind} needs a float field; {name} is a {expected.__name__} (use choice)"
        )
    if not low < high:
        raise at.error(where, f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise at.error(where, f"loguniform needs low > 0, got {low}")
    return Distribution(kind, (low, high))


# ------------------------------------------------------------------------------------------
# The space
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySpace:
    """A validated tuning space.

    Attributes:
        name: the study's name (the file's stem).
        metric: Tune's metric, ``valid/<select metric>``.
        mode: ``max`` (every selectable validation metric is higher-is-better).
        fixed: ``TrainConfig`` values every trial shares.
        search: ``TrainConfig`` fields Tune samples, each with its :class:`Distribution`.
        description: one line for people.
        source: where it was read from (for error messages).
    """

    name: str
    metric: str
    mode: str
    fixed: dict[str, Any]
    search: dict[str, Distribution]
    description: str = ""
    source: str = "<mapping>"
    _lines: dict[KeyPath, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def select_metric(self) -> str:
        return self.metric.removeprefix(METRIC_PREFIX)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this space trains (one fixed, or those a ``choice`` searches)."""
        if "method" in self.search:
            return tuple(self.search["method"].args)
        return (self.fixed.get("method", TrainConfig().method),)

    def edges(self, config: Mapping[str, Any]) -> dict[str, str]:
        """The searched fields whose value in ``config`` (a best configuration) sits at an end
        of its range: field → ``"low"`` or ``"high"`` (:meth:`Distribution.edge`)."""
        edges = {}
        for name, distribution in self.search.items():
            if name in config:
                edge = distribution.edge(config[name])
                if edge is not None:
                    edges[name] = edge
        return edges

    def trial_config(self, params: dict[str, Any], seed: int = TRIAL_SEED) -> TrainConfig:
        """The full configuration of a trial that drew ``params``.

        Raises:
            SpaceError: ``params`` names a field the space does not search.
        """
        unknown = sorted(set(params) - set(self.search))
        if unknown:
            raise SpaceError(
                f"{self.source}: trial parameters {unknown} are not searched by this space "
                f"(searched: {sorted(self.search)}); was the study started from another space?"
            )
        values = {**self.fixed, **params, "seed": seed, "select_metric": self.select_metric}
        return TrainConfig.from_dict(values)

    def pinned(self, **values: Any) -> StudySpace:
        """This space with some fields fixed (e.g. the benchmark pins backbone and method).

        A searched field may be pinned only to a value its distribution can draw; a fixed
        field only to its own value; any other field is added to ``fixed``. A searched choice
        keeps only the values valid with the pins (``backbone='gmf'`` leaves ``bias_init``
        only ``zero``, which then becomes fixed): a trial would otherwise fail on them.

        Raises:
            SpaceError: the value lies outside the searched range or contradicts ``fixed``,
                or makes an invalid ``TrainConfig``.
        """
        fixed, search = dict(self.fixed), dict(self.search)
        at = _locator(self.source, self._lines)
        for name, value in values.items():
            _check_field_name(name, at, ("pinned", name))
            try:
                value = check_field_value(name, value)
            except ValueError as error:
                raise at.error(("pinned", name), f"TrainConfig.{name} {error}") from None
            if name in search:
                if not search[name].contains(value):
                    raise at.error(
                        ("search", name),
                        f"cannot pin {name}={value!r}: the space searches "
                        f"{search[name].to_dict()}; pin a value inside it",
                    )
                del search[name]
            elif name in fixed and fixed[name] != value:
                raise at.error(
                    ("fixed", name),
                    f"cannot pin {name}={value!r}: the space fixes it to {fixed[name]!r}",
                )
            fixed[name] = value
        space = _narrow_choices(dataclasses.replace(self, fixed=fixed, search=search))
        _check_configs(space, at)
        return space

    def param_space(self) -> dict[str, Any]:
        """Tune's ``param_space``: one Tune distribution per searched field."""
        return {name: dist.to_tune() for name, dist in self.search.items()}

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data (same shape as the file; used to recognise a study)."""
        return {
            "name": self.name,
            "description": self.description,
            "metric": self.metric,
            "mode": self.mode,
            "fixed": dict(self.fixed),
            "search": {name: dist.to_dict() for name, dist in self.search.items()},
        }


def _check_field_name(name: Any, at: Locator, path: KeyPath) -> None:
    if name in STUDY_OWNED_FIELDS:
        raise at.error(path, f"{name} is set by the study, not a space: {STUDY_OWNED_FIELDS[name]}")
    if name not in TRAIN_FIELDS:
        raise at.error(
            path, f"{name!r} is not a TrainConfig field; valid fields: {sorted(TRAIN_FIELDS)}"
        )


def _check_configs(space: StudySpace, at: Locator) -> None:
    """Every range end and every choice must make a valid ``TrainConfig`` with the fixed part,
    alone or beside some value of one other searched field (``bias_init='popularity'`` is
    valid only with ``backbone='biased_mf'``, which the benchmark pins per row)."""
    base = {**space.fixed, "select_metric": space.select_metric}
    try:
        TrainConfig.from_dict(base)
    except ValueError as error:
        raise at.error(("fixed",), f"the fixed values make no valid TrainConfig: {error}") from None
    for name, dist in space.search.items():
        for value in dist.probe_values():
            try:
                TrainConfig.from_dict({**base, name: value})
            except ValueError as error:
                if not _valid_beside_another_field(space, base, name, value):
                    raise at.error(
                        ("search", name), f"value {value!r} makes no valid TrainConfig: {error}"
                    ) from None


def _narrow_choices(space: StudySpace) -> StudySpace:
    """``space`` with each searched choice cut to the values some valid config can take
    (see :meth:`StudySpace.pinned`); a choice left with one value becomes fixed, one left with
    none is kept whole for :func:`_check_configs` to report."""
    fixed, search = dict(space.fixed), dict(space.search)
    base = {**fixed, "select_metric": space.select_metric}
    for name, dist in space.search.items():
        if dist.kind != "choice":
            continue
        valid = tuple(
            value
            for value in dist.args
            if _makes_config({**base, name: value})
            or _valid_beside_another_field(space, base, name, value)
        )
        if len(valid) == 1:
            del search[name]
            fixed[name] = valid[0]
        elif 1 < len(valid) < len(dist.args):
            search[name] = Distribution("choice", valid)
    return dataclasses.replace(space, fixed=fixed, search=search)


def _makes_config(values: dict[str, Any]) -> bool:
    try:
        TrainConfig.from_dict(values)
    except ValueError:
        return False
    return True


def _valid_beside_another_field(
    space: StudySpace, base: dict[str, Any], name: str, value: Any
) -> bool:
    for other, dist in space.search.items():
        if other == name:
            continue
        if any(_makes_config({**base, name: value, other: v}) for v in dist.probe_values()):
            return True
    return False


def parse_space(
    values: Any, name: str, source: str = "<mapping>", lines: dict[KeyPath, int] | None = None
) -> StudySpace:
    """Validate a space given as plain data (the parsed YAML).

    Raises:
        SpaceError: on anything malformed; the message names ``source``, the line and the key.
    """
    lines = lines or {}
    at = _locator(source, lines)
    if not isinstance(values, dict):
        raise at.error((), f"a space file holds a mapping with keys {list(TOP_LEVEL_KEYS)}")
    for key in values:
        if key not in TOP_LEVEL_KEYS:
            raise at.error((key,), f"unknown key; valid top-level keys: {list(TOP_LEVEL_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in values:
            raise at.error((), f"missing required key {key!r}")

    metric = values["metric"]
    valid_metrics = [METRIC_PREFIX + name for name in SELECT_METRICS]
    if metric not in valid_metrics:
        raise at.error(
            ("metric",),
            f"{metric!r} is not a selectable validation metric; valid: {valid_metrics} "
            "(tuning reads validation metrics only, never test ones)",
        )
    mode = values.get("mode", "max")
    if mode != "max":
        raise at.error(
            ("mode",),
            f"must be 'max' (every validation metric in {metric!r}'s family "
            f"is higher-is-better), got {mode!r}",
        )
    description = values.get("description", "")
    if not isinstance(description, str):
        raise at.error(("description",), f"must be a string, got {description!r}")

    fixed_values = values.get("fixed") or {}
    if not isinstance(fixed_values, dict):
        raise at.error(("fixed",), "must be a mapping of TrainConfig fields to values")
    fixed = {}
    for key, value in fixed_values.items():
        _check_field_name(key, at, ("fixed", key))
        try:
            fixed[key] = check_field_value(key, value)
        except ValueError as error:
            raise at.error(("fixed", key), f"TrainConfig.{key} {error}") from None

    search_values = values["search"]
    if not isinstance(search_values, dict) or not search_values:
        raise at.error(("search",), "must be a non-empty mapping of fields to distributions")
    search = {}
    for key, spec in search_values.items():
        _check_field_name(key, at, ("search", key))
        if key in fixed:
            raise at.error(("search", key), "is both fixed and searched; keep one")
        if key == "epochs":
            raise at.error(
                ("search", key),
                "epochs is the trials' time axis (ASHA's max_t), not a searched value; fix it",
            )
        search[key] = _parse_distribution(key, spec, at, ("search", key))

    if "method" in search and not set(search["method"].args) <= set(METHODS):
        raise at.error(("search", "method"), f"methods must come from {list(METHODS)}")
    space = StudySpace(
        name=name,
        metric=metric,
        mode=mode,
        fixed=fixed,
        search=search,
        description=description,
        source=source,
        _lines=lines,
    )
    _check_configs(space, at)
    return space


def load_space(path: str | Path) -> StudySpace:
    """Read and validate a space file; the study is named after the file's stem.

    Raises:
        SpaceError: the file is missing, not YAML, or malformed (file, line and key named).
    """
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such space file (spaces live in tune_spaces/*.yaml)")
    try:
        values, lines = load_yaml_with_lines(path.read_text(), str(path))
    except ConfigFileError as error:
        raise SpaceError(str(error)) from None
    return parse_space(values, path.stem, str(path), lines)
