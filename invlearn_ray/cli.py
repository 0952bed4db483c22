"""Argument types shared by the ``pipelines/`` scripts, so every command rejects bad numbers alike.

Each function is an ``argparse`` ``type=``: it returns the parsed value or raises
``ArgumentTypeError``, which argparse turns into a usage error naming the option (exit status 2).
"""

from __future__ import annotations

import argparse


def _number(text: str, kind: type, expected: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a positive number")
    if not value > 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def comma_names(text: str) -> tuple[str, ...]:
    """``"gmf, neumf"`` → ``("gmf", "neumf")``; an empty list is an error."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def comma_floats(text: str) -> tuple[float, ...]:
    """``"1,0.3"`` → ``(1.0, 0.3)``; ``""`` → ``()`` (an explicit "none")."""
    if not text.strip():
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def add_ray_options(group: argparse._ActionsContainer) -> None:
    """``--address`` / ``--num-cpus``: which Ray a pipeline joins or starts (see ``ensure_ray``)."""
    group.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else start a local Ray)"
    )
    group.add_argument("--num-cpus", type=positive_int, help="CPUs of a local Ray")
