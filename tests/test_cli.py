"""The command lines' shared error policy: one line, exit 1 or 2, and bugs keep their traceback."""

from __future__ import annotations

import argparse

import pytest

from invlearn_ray.cli import EXIT_INPUT, EXIT_USAGE, ArgumentParser, command_line, plain_name
from invlearn_ray.core.checkpoint import ModelFormatError
from invlearn_ray.core.trainer import TrainingDiverged, UnsuitableDatasetError
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.distributed.recommend import OutputExistsError, UnknownUserError
from invlearn_ray.distributed.run_dir import RunConflictError, RunExistsError
from invlearn_ray.errors import UserError


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
