"""What a run records besides its metrics, for the paper's figures and the annotation tables.

* :class:`DirectionLog` — IG's choice among its three candidate directions and their test
  losses at every meta step (paper Figures 2–3, 7);
* :class:`UnlabeledDiagnostics` — on a fixed, seeded sample of unlabeled rows, scored once per
  epoch: how well the model labels them (annotation quality against the hidden truth) and,
  for IDL methods, the histogram of the positive weight w¹ (paper Figures 4–5).

Cost: the direction log grows by two small tensors per meta step; the diagnostics score at
most ``2 x DIAGNOSTIC_ROWS`` pairs per epoch, whatever the dataset's size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invlearn_ray.data.hashing import stream_seed
from invlearn_ray.data.recdata import RecData
from invlearn_ray.data.sampling import epoch_generator, sample_unlabeled
from invlearn_ray.evaluation.evaluate import annotation_quality, score_pairs
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.methods.losses import idl_weights
from invlearn_ray.methods.registry import method_spec
from invlearn_ray.models.backbones import Backbone
from invlearn_ray.training.config import TrainConfig

WEIGHT_BINS = 20
DIAGNOSTIC_ROWS = 50_000
_DIAGNOSTIC_STREAM = 991


class DirectionLog:
    """Every meta step's chosen direction and three candidate losses, with its epoch."""

    def __init__(self) -> None:
        self.log: dict[str, list[Tensor]] = {"epoch": [], "choice": [], "losses": []}

    def add(self, choice: Tensor, losses: Tensor) -> None:
        """One meta step (copied: a replayed CUDA graph overwrites its outputs)."""
        self.log["choice"].append(choice.reshape(1).clone())
        self.log["losses"].append(losses.reshape(1, 3).clone())

    def end_epoch(self, epoch: int) -> dict[str, int]:
        """Tag this epoch's steps with ``epoch``; returns how often each direction was chosen
        (``{"none_steps": n, ...}``, empty for an epoch without meta steps)."""
        tagged = sum(len(epochs) for epochs in self.log["epoch"])
        choices = self.log["choice"][tagged:]
        self.log["epoch"].append(torch.full((len(choices),), epoch))
        if not choices:
            return {}
        counts = torch.bincount(torch.cat(choices), minlength=len(CANDIDATES)).tolist()
        return {f"{name}_steps": count for name, count in zip(CANDIDATES, counts, strict=True)}

    def tensors(self) -> dict[str, Tensor]:
        """``epoch``, ``choice`` and ``losses`` as one CPU tensor each (the saved log)."""
        return {
            key: torch.cat(values).cpu() if values else torch.zeros(0)
            for key, values in self.log.items()
        }

    def state_dict(self) -> dict[str, list[Tensor]]:
        return self.log

    def load_state_dict(self, state: dict[str, list[Tensor]]) -> None:
        self.log = state


class UnlabeledDiagnostics:
    """Annotation quality and IDL weight histograms on one fixed sample of unlabeled rows.

    The sample — sampled non-interacted items (with planted truth on synthetic data) and
    observed-unlabeled rows (with hidden labels where the dataset kept them) — is drawn once,
    seeded by ``config.seed``, so every epoch and every resumed run scores the same rows.
    """

    def __init__(self, config: TrainConfig, data: RecData, device: torch.device) -> None:
        self.config = config
        self.weight_histograms: dict[int, Tensor] = {}
        rows: dict[str, Tensor] = {}
        take = data.labeled_training().users[:DIAGNOSTIC_ROWS]
        generator = epoch_generator(stream_seed(config.seed, _DIAGNOSTIC_STREAM), 0, device=device)
        sampled_items = sample_unlabeled(take, data.seen_in_training, 1, generator).reshape(-1)
        rows["sampled_users"], rows["sampled_items"] = take, sampled_items
        if data.truth is not None:
            rows["sampled_truth"] = data.truth(take.cpu(), sampled_items.cpu()).to(device)
        observed = data.observed_unlabeled
        rows["observed_users"] = observed.users[:DIAGNOSTIC_ROWS]
        rows["observed_items"] = observed.items[:DIAGNOSTIC_ROWS]
        rows["observed_truth"] = observed.hidden_labels[:DIAGNOSTIC_ROWS]
        self.rows = rows

    def end_epoch(self, epoch: int, model: Backbone) -> dict[str, float]:
        """Score the rows once: record the epoch's weight histogram, return its annotation."""
        logits = self._logits(model)
        self._record_weights(epoch, logits)
        return self._annotation(logits)

    def annotation(self, model: Backbone) -> dict[str, float]:
        """How ``model`` labels the rows: ``{"sampled_accuracy": ..., ...}``."""
        return self._annotation(self._logits(model))

    def pairs(self) -> tuple[Tensor, Tensor]:
        """``(users, items)`` of the scored rows, sampled then observed."""
        users = torch.cat([self.rows["sampled_users"], self.rows["observed_users"]])
        items = torch.cat([self.rows["sampled_items"], self.rows["observed_items"]])
        return users, items

    def _logits(self, model: Backbone) -> Tensor:
        """The model's logits on the rows, sampled then observed."""
        users, items = self.pairs()
        was_training = model.training
        model.eval()
        logits = score_pairs(model, users, items)
        model.train(was_training)
        return logits

    def _annotation(self, logits: Tensor) -> dict[str, float]:
        """Annotation quality; for IDL methods also the AUC of the IDL weight w¹."""
        rows, report = self.rows, {}
        n_sampled = len(rows["sampled_users"])
        idl = method_spec(self.config.method).idl_weights
        temperature = self.config.idl_temperature if idl else None
        if "sampled_truth" in rows:
            report.update(
                annotation_quality(
                    logits[:n_sampled], rows["sampled_truth"], "sampled", temperature
                )
            )
        if len(rows["observed_users"]):
            report.update(
                annotation_quality(
                    logits[n_sampled:], rows["observed_truth"], "observed", temperature
                )
            )
        return report

    @torch.no_grad()
    def _record_weights(self, epoch: int, logits: Tensor) -> None:
        """Histogram of the IDL positive weight w¹ over the rows (paper Fig. 4–5)."""
        if not method_spec(self.config.method).idl_weights:
            return
        pos_weight, _ = idl_weights(logits, self.config.idl_temperature)
        self.weight_histograms[epoch] = torch.histc(
            pos_weight.float(), bins=WEIGHT_BINS, min=0.0, max=1.0
        ).cpu()

    def state_dict(self) -> dict[int, Tensor]:
        return self.weight_histograms

    def load_state_dict(self, state: dict[int, Tensor]) -> None:
        self.weight_histograms = state
