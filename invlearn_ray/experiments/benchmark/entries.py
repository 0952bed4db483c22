"""What the benchmark table's rows are and what tables call them.

A row is an *entry*: a method from :data:`~invlearn_ray.methods.registry.METHOD_SPECS`, or
``best_explicit`` — whichever explicit-negative loss tunes best. Each entry has the tuning space
of its method; the names tables and figures show come from the methods' specs too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from invlearn_ray.methods.registry import METHOD_SPECS, METHODS

BEST_EXPLICIT = "best_explicit"
ENTRIES = (*METHODS, BEST_EXPLICIT)
"""Table rows: every method, plus the explicit-negative loss that tunes best."""
ENTRY_SPACES = {
    **{name: spec.space_file for name, spec in METHOD_SPECS.items()},
    BEST_EXPLICIT: "explicit_negative.yaml",
}
"""The space that tunes each entry (the explicit-negative one is pinned to a single loss,
except for ``best_explicit``, where the study also picks the loss)."""
UNTUNED_BEST_EXPLICIT = "sl_complement"
"""``best_explicit`` without tuning: the complement likelihood, the stable alternative to
negating the gradient (seed 002)."""

GROUP_MAIN = "main"
"""Runs of a table row (tag ``group``)."""
GROUP_RATIO = "ratio_study"
"""IG runs at other α/γ values (paper Figure 7); not table rows."""

METHOD_NAMES = {
    **{name: spec.display_name for name, spec in METHOD_SPECS.items()},
    BEST_EXPLICIT: "SL + explicit (best)",
}
"""Row names of the tables: every method's display name, and the benchmark's extra entry."""
BACKBONE_NAMES = {
    "mf": "MF",
    "gmf": "GMF",
    "biased_mf": "Biased MF",
    "neumf": "NeuMF",
    "lightgcn": "LightGCN",
}


def entry_method(entry: str, overrides: Mapping[str, Any]) -> str:
    """The method a row trains: the entry itself, or for ``best_explicit`` the given/tuned loss."""
    if entry != BEST_EXPLICIT:
        return entry
    return overrides.get("method", UNTUNED_BEST_EXPLICIT)


def method_name(entry: str) -> str:
    return METHOD_NAMES.get(entry, entry)


def backbone_name(backbone: str) -> str:
    return BACKBONE_NAMES.get(backbone, backbone)
