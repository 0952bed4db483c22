"""Exceptions of the data layer.

Every error says what is wrong, where (file, line, column or split) and what to do, so that a
bad input row in a million-line file can be found and fixed without a debugger. All derive from
``DataError`` (a ``ValueError``), so callers can catch the family at once.
"""

from __future__ import annotations

from invlearn_ray.errors import UserError


def _restore(cls: type, args: tuple, state: dict) -> DataError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class DataError(ValueError, UserError):
    """Base class: bad input data, a bad dataset option or a bad dataset directory.

    Picklable with all attributes, so an error raised inside a Ray task can travel to the
    driver and be raised there as itself.
    """

    def __reduce__(self):
        return (_restore, (type(self), self.args, self.__dict__))


class InputFormatError(DataError):
    """A source file (or in-memory source) holds a value or line that cannot be read.

    Attributes:
        path: the file (or source name) the bad value comes from.
        line: 1-based line number in a text file, or 1-based row number in a Parquet file.
        column: canonical or source column name, where one is involved.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str,
        line: int | None = None,
        column: str | None = None,
        fix: str,
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = path if line is None else f"{path}:{line}"
        if column is not None:
            where += f": column {column!r}"
        super().__init__(f"{where}: {problem}. {fix}")


class EmptyInputError(DataError):
    """The source holds no data rows at all."""


class EmptySplitError(DataError):
    """A split (train_train, train_test, valid or test) would hold no rows."""


class SingleClassSplitError(DataError):
    """A validation or test split holds only one label class (AUC and GAUC are undefined)."""


class NoLabeledRowsError(DataError):
    """The labeling rule labels no row: every one falls between its thresholds."""


class OutputDirectoryError(DataError):
    """The output directory holds something a build must not replace."""


class DatasetFormatError(DataError):
    """A directory is not a built dataset, or was built with another schema version."""


class FullyInteractedUserError(DataError):
    """Unlabeled sampling was asked for a user who has interacted with every item."""
