"""Given configurations: a ``--configs`` YAML file of ``TrainConfig`` overrides by scope.

Validated when read, with the file, line and key of anything wrong (the same locator as the
other config files, :mod:`invlearn_ray.config_io`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invlearn_ray.config_io import (
    ConfigFileError,
    KeyPath,
    Locator,
    check_field_value,
    load_yaml_with_lines,
)
from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT, ENTRIES
from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError
from invlearn_ray.models.backbones import BACKBONES
from invlearn_ray.training.config import TrainConfig


@dataclass(frozen=True)
class GivenConfigs:
    """``TrainConfig`` overrides by scope: ``all``, an entry (``ig``) or ``backbone/entry``.

    File format (YAML)::

        all: {epochs: 10}            # every run
        ig: {dual_lr_ratio: 1.0}     # every IG run
        neumf/ig: {lr: 1.0e-3}       # IG on NeuMF only
    """

    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_run(self, entry: str, backbone: str) -> dict[str, Any]:
        """The merged overrides of a run (narrower scopes win)."""
        merged: dict[str, Any] = {}
        for scope in ("all", entry, f"{backbone}/{entry}"):
            merged.update(self.scopes.get(scope, {}))
        return merged


def load_given_configs(path: str | Path) -> GivenConfigs:
    """Read and validate a ``--configs`` file.

    Raises:
        BenchmarkConfigError: unknown scope, field or value, with file, line and key.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkConfigError(f"{path}: no such configs file")
    try:
        values, lines = load_yaml_with_lines(path.read_text(), str(path))
    except ConfigFileError as error:
        raise BenchmarkConfigError(str(error)) from None
    return parse_given_configs(values, str(path), lines)


def parse_given_configs(
    values: Any, source: str = "<configs>", lines: dict[KeyPath, int] | None = None
) -> GivenConfigs:
    """Validate given configurations held as plain data (see :func:`load_given_configs`)."""
    fail = Locator(source, lines or {}, BenchmarkConfigError).error

    if values is None:
        return GivenConfigs()
    if not isinstance(values, dict):
        raise BenchmarkConfigError(f"{source}: a configs file holds a mapping of scopes")
    valid_scopes = ["all", *ENTRIES, *(f"{b}/{e}" for b in BACKBONES for e in ENTRIES)]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    scopes = {}
    for scope, overrides in values.items():
        if scope not in valid_scopes:
            raise fail(
                (scope,),
                f"unknown scope; use 'all', an entry {list(ENTRIES)} or 'backbone/entry' "
                f"with a backbone from {sorted(BACKBONES)}",
            )
        if not isinstance(overrides, dict):
            raise fail((scope,), "must map TrainConfig fields to values")
        checked = {}
        for name, value in overrides.items():
            if name not in fields:
                raise fail((scope, name), f"not a TrainConfig field; valid: {sorted(fields)}")
            if name in ("seed", "backbone") or (name == "method" and scope != BEST_EXPLICIT):
                raise fail(
                    (scope, name),
                    f"{name} is set by the benchmark grid (--seeds, --backbones, --methods)",
                )
            try:
                checked[name] = check_field_value(name, value)
            except ValueError as error:
                raise fail((scope, name), f"TrainConfig.{name} {error}") from None
        scopes[scope] = checked
    return GivenConfigs(scopes)
