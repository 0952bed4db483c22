"""The one distinction every command line makes: an error its user can fix, or a bug.

A :class:`UserError` says the input was wrong — a file, a dataset, a model folder, an option's
value, settings under which training diverged — and its message says what, where and what to
do. The command lines print it as one line and exit 1 (:func:`invlearn_ray.cli.command_line`);
every other exception is a bug and keeps its traceback. Error families of every layer derive
from it (``DataError``, ``TrainingDiverged``, ``RunExistsError``, ...). No imports: every layer
may use it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message is one line saying what, where and the fix."""
