"""The table's rows: every entry has a space that trains it; best_explicit's method."""

from __future__ import annotations

from invlearn_ray.experiments.benchmark.entries import (
    BEST_EXPLICIT,
    ENTRIES,
    ENTRY_SPACES,
    entry_method,
)
from invlearn_ray.experiments.spaces import SPACES_DIR, load_space
from invlearn_ray.methods.registry import METHODS


def test_every_entry_has_a_space_that_trains_it():
    assert set(ENTRY_SPACES) == set(ENTRIES) == {*METHODS, BEST_EXPLICIT}
    for entry, file in ENTRY_SPACES.items():
        methods = load_space(SPACES_DIR / file).methods
        assert entry in methods or (entry == BEST_EXPLICIT and len(methods) == 3)


def test_best_explicit_takes_the_given_loss_or_the_complement_likelihood():
    assert entry_method("ig", {}) == "ig"
    assert entry_method(BEST_EXPLICIT, {}) == "sl_complement"
    assert entry_method(BEST_EXPLICIT, {"method": "sl_focal"}) == "sl_focal"
