"""Progress bars for long work (the benchmark grid, epochs of a long run).

A bar is shown only where its progress lines would be: when the logger of the code doing the
work prints INFO (a command line without ``-q``; a library caller that has not configured
logging sees nothing) and stderr is a terminal (tqdm's own check, so logs and CI output stay
free of bar redraws). Log lines go above a running bar (``ProgressAwareHandler`` in
:mod:`invlearn_ray.cli`).
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm


def progress_bar(logger: logging.Logger, total: int | None, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr that disappears when closed (the log lines stay)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=None if logger.isEnabledFor(logging.INFO) else True,
    )
