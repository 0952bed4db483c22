"""The command lines' shared error policy (one line, exit 1 or 2, bugs keep their traceback)
and their -q / -v: what reaches stderr, the handler set up once, progress bars following -q."""

from __future__ import annotations

import argparse
import logging
import os

import pytest

from invlearn_ray.cli import (
    EXIT_INPUT,
    EXIT_USAGE,
    MLFLOW_LEVEL_VARIABLE,
    QUIET,
    THIRD_PARTY_LOGGERS,
    VERBOSE,
    ArgumentParser,
    ProgressAwareHandler,
    add_ray_options,
    command_line,
    configure_logging,
    plain_name,
)
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.distributed.recommend import OutputExistsError, UnknownUserError
from invlearn_ray.errors import UserError
from invlearn_ray.models.checkpoint import ModelFormatError
from invlearn_ray.progress import progress_bar
from invlearn_ray.training.run_folder import RunConflictError, RunExistsError
from invlearn_ray.training.trainer import TrainingDiverged, UnsuitableDatasetError


def test_a_user_error_is_one_line_on_stderr_and_exit_status_1(capsys):
    @command_line
    def main(argv=None) -> int:
        raise DatasetFormatError("data/x: split 'valid': changed\nafter the build.")

    assert main([]) == EXIT_INPUT
    captured = capsys.readouterr()
    assert captured.err == "error: data/x: split 'valid': changed after the build.\n"
    assert captured.out == ""


def test_a_bug_keeps_its_traceback():
    @command_line
    def main(argv=None) -> int:
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError, match="a bug"):
        main([])


def test_success_passes_the_exit_status_through():
    assert command_line(lambda argv: 0)(["--anything"]) == 0


def test_a_usage_error_is_one_line_and_exit_status_2(capsys):
    parser = ArgumentParser(prog="tool.py")
    parser.add_argument("--count", type=int, required=True)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--count", "many"])
    assert stopped.value.code == EXIT_USAGE
    assert capsys.readouterr().err == (
        "tool.py: error: argument --count: invalid int value: 'many' (see --help)\n"
    )


@pytest.mark.parametrize("name", ["ml100k", "synthetic-tiny", "a.b_c"])
def test_plain_names_are_accepted(name):
    assert plain_name(name) == name


@pytest.mark.parametrize("name", ["", "..", ".", "../../x", "a/b", ".hidden", "a\\b"])
def test_names_that_could_leave_their_folder_are_refused(name):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a plain name"):
        plain_name(name)


def test_every_error_family_a_command_reports_is_a_user_error():
    families = (
        DatasetFormatError,
        ModelFormatError,
        TrainingDiverged,
        UnsuitableDatasetError,
        OutputExistsError,
        UnknownUserError,
        RunConflictError,
        RunExistsError,
    )
    assert all(issubclass(family, UserError) for family in families)


def _args(*argv: str) -> argparse.Namespace:
    return ArgumentParser(prog="tool.py").parse_args(argv)


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as stopped:
        _args("-q", "-v")
    assert stopped.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_progress_lines_show_by_default_and_quiet_keeps_only_warnings(capsys):
    logger = logging.getLogger("invlearn_ray.experiments.runs")
    configure_logging(_args())
    logger.info("[1/2] synthetic/gmf/ig/seed0  AUC 0.6")
    logger.debug("details")
    assert capsys.readouterr().err == "[1/2] synthetic/gmf/ig/seed0  AUC 0.6\n"

    assert configure_logging(_args("-q")) == QUIET
    logger.info("[2/2] progress")
    logger.warning("a run failed")
    assert capsys.readouterr().err == "warning: a run failed\n"
    libraries = [logging.getLogger(name) for name in THIRD_PARTY_LOGGERS]
    assert not any(logger.isEnabledFor(logging.INFO) for logger in libraries)


def test_verbose_shows_details_and_the_libraries_own_lines(capsys):
    assert configure_logging(_args("-v")) == VERBOSE
    logging.getLogger("invlearn_ray.core").debug("epoch 3 details")
    assert "invlearn_ray.core DEBUG: epoch 3 details" in capsys.readouterr().err
    # Ray and MLflow print through their own handlers; -v lets their INFO lines through.
    assert all(logging.getLogger(name).isEnabledFor(logging.INFO) for name in THIRD_PARTY_LOGGERS)


def test_configuring_twice_keeps_one_handler():
    configure_logging(_args())
    configure_logging(_args("-v"))
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ProgressAwareHandler)]
    assert len(handlers) == 1


def test_progress_bars_are_off_with_quiet():
    logger = logging.getLogger("invlearn_ray.experiments.runs")
    configure_logging(_args("-q"))
    with progress_bar(logger, 3, desc="runs", unit="run") as bar:
        assert bar.disable


def test_mlflow_imported_after_configuring_keeps_its_info_lines_for_verbose(monkeypatch):
    from mlflow.utils.logging_utils import _configure_mlflow_loggers  # what `import mlflow` runs

    monkeypatch.delenv(MLFLOW_LEVEL_VARIABLE, raising=False)
    configure_logging(_args())
    _configure_mlflow_loggers("mlflow")
    assert not logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.INFO)

    configure_logging(_args("-v"))
    _configure_mlflow_loggers("mlflow")
    assert logging.getLogger("mlflow.store.db.utils").isEnabledFor(logging.INFO)

    monkeypatch.setenv(MLFLOW_LEVEL_VARIABLE, "DEBUG")  # the user's own choice stays
    configure_logging(_args("-q"))
    assert os.environ[MLFLOW_LEVEL_VARIABLE] == "DEBUG"


def test_ray_options_take_an_object_store_cap_in_gb_and_refuse_a_non_positive_one(capsys):
    parser = ArgumentParser(prog="build_data.py")
    add_ray_options(parser)
    assert parser.parse_args(["--object-store-gb", "2.5"]).object_store_gb == 2.5
    assert parser.parse_args([]).object_store_gb is None
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--object-store-gb", "0"])
    assert stopped.value.code == EXIT_USAGE
    assert "--object-store-gb" in capsys.readouterr().err
