"""What every ``pipelines/`` command line shares: its error policy and its argument types.

**Errors.** A command line says what went wrong in one line on stderr and exits with

* ``2`` (:data:`EXIT_USAGE`) when the command line itself is wrong — an unknown option, a value
  of the wrong type or out of range, options that do not go together. :class:`ArgumentParser`
  prints ``prog: error: ...`` on one line (argparse prints its whole usage first);
* ``1`` (:data:`EXIT_INPUT`) when the command line is well formed but what it points at is
  wrong — a missing file, a malformed row, a dataset changed since its build, a corrupt model,
  an output that must not be replaced, a run that diverged: any
  :class:`~invlearn_ray.errors.UserError`, caught by :func:`command_line`.

Anything else is a bug and keeps its traceback. Commands check all they can before starting
Ray, so a wrong input costs no start-up and leaves no output behind.

**Argument types.** Each ``*_int`` / ``*_float`` / ``comma_*`` / :func:`plain_name` function is
an ``argparse`` ``type=``: it returns the parsed value or raises ``ArgumentTypeError``, which
argparse turns into a usage error naming the option.

**Output.** Every command line has ``-q/--quiet`` and ``-v/--verbose`` (added by
:class:`ArgumentParser`); :func:`configure_logging` turns them into logging levels: progress
lines at INFO (shown by default), details at DEBUG (``-v``), warnings always; Ray's, Ray Tune's
and MLflow's own output only with ``-v``. Results (where the outputs are, the tables) are printed
whatever the level.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable

from tqdm import tqdm

from invlearn_ray.errors import UserError

EXIT_INPUT = 1
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line: ``prog: error: message (see --help)``,
    with ``-q/--quiet`` and ``-v/--verbose`` on every command line (:func:`configure_logging`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_verbosity_options(self)

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(text: str) -> str:
    """``text`` with its lines joined, so an error is one line whatever its source wrote."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def command_line(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a pipeline's ``main(argv) -> exit status``: a :class:`UserError` raised in it
    is printed as ``error: <message>`` (one line, stderr) and returns :data:`EXIT_INPUT`."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {one_line(str(error))}", file=sys.stderr, flush=True)
            return EXIT_INPUT

    return run


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


def plain_name(text: str) -> str:
    """A name that becomes one folder (or file prefix) inside its parent: no path separators,
    not ``.``/``..``, not hidden — so ``--name ../../x`` cannot write outside its folder."""
    if not text or "/" in text or "\\" in text or text.startswith(".") or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"expected a plain name (no '/', not starting with '.'), got {text!r}; choose the "
            "folder with --out"
        )
    return text


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
    """``--address`` / ``--num-cpus`` / ``--object-store-gb``: which Ray a pipeline joins or
    starts (see ``ensure_ray``)."""
    group.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, else start a local Ray)"
    )
    group.add_argument("--num-cpus", type=positive_int, help="CPUs of a local Ray")
    group.add_argument(
        "--object-store-gb",
        type=positive_float,
        help="cap of a local Ray's shared object store in GB (default: Ray's, 30%% of memory); "
        "what does not fit spills to disk",
    )


QUIET, NORMAL, VERBOSE = -1, 0, 1
"""Verbosity of a command line (``-q`` / default / ``-v``)."""
_PACKAGE_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
THIRD_PARTY_LOGGERS = ("ray", "ray.data", "mlflow", "alembic")
"""Libraries whose own INFO lines (Ray Tune's bookkeeping, Ray Data's plans, MLflow's database
set-up) are shown only with ``-v`` (``ray.data`` sets its own level, so it is named too)."""


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` (see :func:`configure_logging`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress lines or bars, only warnings and errors (results are still printed)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug lines, and Ray's, Ray Tune's and MLflow's own output",
    )


def configure_logging(args: argparse.Namespace) -> int:
    """Send every log line to stderr through one handler and set the levels ``-q``/``-v`` ask
    for; returns the verbosity (:data:`QUIET`, :data:`NORMAL` or :data:`VERBOSE`).

    The package logs progress at INFO (shown by default), details at DEBUG (``-v``); the
    libraries in :data:`THIRD_PARTY_LOGGERS` show only warnings unless ``-v``. Progress bars
    follow the same switch (:func:`invlearn_ray.progress.progress_bar`). Calling it again
    replaces its handler rather than adding a second one.
    """
    verbosity = QUIET if args.quiet else VERBOSE if args.verbose else NORMAL
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ProgressAwareHandler)]:
        root.removeHandler(handler)
    handler = ProgressAwareHandler()
    handler.setFormatter(_Formatter(detailed=verbosity == VERBOSE))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("invlearn_ray").setLevel(_PACKAGE_LEVELS[verbosity])
    set_third_party_levels(verbosity)
    _quiet_mlflow_at_import(verbosity != VERBOSE)
    return verbosity


def set_third_party_levels(verbosity: int) -> None:
    """The levels of :data:`THIRD_PARTY_LOGGERS`: INFO with ``-v``, else WARNING.

    Importing Ray resets its loggers, so whoever starts Ray calls this again
    (:func:`invlearn_ray.distributed.session.ensure_ray`)."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbosity == VERBOSE else logging.WARNING)


MLFLOW_LEVEL_VARIABLE = "MLFLOW_LOGGING_LEVEL"
_mlflow_level_set_here = False


def _quiet_mlflow_at_import(quiet: bool) -> None:
    """MLflow configures its loggers when it is first imported — after this, in the pipelines
    and in Ray's workers — so the levels set above would not reach its "Creating initial
    MLflow database tables" lines; its environment variable does, and Ray's workers inherit
    it. A value the user set is left alone."""
    global _mlflow_level_set_here
    if quiet and MLFLOW_LEVEL_VARIABLE not in os.environ:
        os.environ[MLFLOW_LEVEL_VARIABLE] = "WARNING"
        _mlflow_level_set_here = True
    elif not quiet and _mlflow_level_set_here:
        del os.environ[MLFLOW_LEVEL_VARIABLE]
        _mlflow_level_set_here = False


class ProgressAwareHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` through ``tqdm.write``, so a log line appears
    above a running progress bar instead of breaking it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never take the program down
            self.handleError(record)


class _Formatter(logging.Formatter):
    """Progress lines as they are; warnings and errors prefixed by their level; with ``-v``
    every line with its time and logger."""

    def __init__(self, detailed: bool) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s: %(message)s" if detailed else None)
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.detailed and record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text
