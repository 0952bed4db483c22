"""Saving and restoring a trained backbone without the code that trained it.

A saved model is a directory holding ``model.pt`` (a plain ``state_dict`` of tensors, loadable
with ``torch.load(weights_only=True)`` — no pickled objects) and ``model.json`` (the backbone's
registry name, sizes, constructor config and free-form metadata such as the method and the
selected epoch). Buffers that define the model (LightGCN's graph) are in the state dict, so the
config alone rebuilds the module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from invlearn_ray.core.backbones import BACKBONES, Backbone, build_backbone

MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"
FORMAT_VERSION = 1

# Constructor arguments that are tensors, restored from the state dict rather than the JSON.
_TENSOR_ARGUMENTS = ("graph_users", "graph_items")


def save_model(
    model: Backbone, directory: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(state, directory / MODEL_WEIGHTS)
    description = {
        "format_version": FORMAT_VERSION,
        "backbone": model.name,
        "n_users": model.n_users,
        "n_items": model.n_items,
        "config": model.config(),
        "metadata": metadata or {},
    }
    (directory / MODEL_CONFIG).write_text(json.dumps(description, indent=2, sort_keys=True))
    return directory


def read_model_description(directory: str | Path) -> dict[str, Any]:
    """The ``model.json`` of a saved model, with a clear error when it is not one."""
    path = Path(directory) / MODEL_CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a saved model: {MODEL_CONFIG} is missing "
            "(expected the output directory of a training run)"
        )
    description = json.loads(path.read_text())
    if description.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: model format version {description.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; re-save the model with this version of invlearn_ray"
        )
    if description.get("backbone") not in BACKBONES:
        raise ValueError(
            f"{path}: unknown backbone {description.get('backbone')!r}; "
            f"valid names: {sorted(BACKBONES)}"
        )
    return description


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> Backbone:
    """Rebuild a saved backbone from its directory (weights loaded with ``weights_only=True``)."""
    description = read_model_description(directory)
    state = torch.load(
        Path(directory) / MODEL_WEIGHTS, map_location=map_location, weights_only=True
    )
    tensor_arguments = {name: state[name] for name in _TENSOR_ARGUMENTS if name in state}
    model = build_backbone(
        description["backbone"],
        description["n_users"],
        description["n_items"],
        **description["config"],
        **tensor_arguments,
    )
    model.load_state_dict(state)
    return model.to(map_location)
