"""The console's :class:`~invlearn_ray.training.trainer.EpochSink`: a progress bar.

The loop is the trainer's alone (start, resume, stop, score); an environment only says what
happens around each epoch — the shape of Lightning's callbacks and of Ray Train's
``train_loop_per_worker``. The Ray layer's sink is
:class:`~invlearn_ray.distributed.reporting.CheckpointSink` (Ray Train's or Ray Tune's report
with a checkpoint).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from invlearn_ray.training.trainer import EpochRecord, EpochSink, Trainer


class ConsoleSink(EpochSink):
    """A progress bar's step and the validation metric per epoch; the full record at DEBUG.

    Args:
        bar: a tqdm-like bar (``update``, ``set_postfix_str``), e.g. from
            :func:`invlearn_ray.progress.progress_bar`.
        metric: the validation metric shown (the config's ``select_metric``).
    """

    def __init__(self, bar: Any, metric: str, logger: logging.Logger | None = None) -> None:
        self.bar = bar
        self.metric = metric
        self.logger = logger or logging.getLogger(__name__)

    def report(self, record: EpochRecord, trainer: Trainer) -> None:
        self.bar.set_postfix_str(
            f"valid {self.metric} {record.valid.get(self.metric, math.nan):.4f}"
        )
        self.bar.update()
        self.logger.debug(f"epoch {record.epoch}: {record.flat()}")
