"""Saving and restoring a trained backbone without the code that trained it.

A saved model is a directory holding ``model.pt`` (a plain ``state_dict`` of tensors, loadable
with ``torch.load(weights_only=True)`` — no pickled objects) and ``model.json`` (the backbone's
registry name, sizes, constructor config and free-form metadata such as the method and the
selected epoch). Buffers that define the model (LightGCN's graph) are in the state dict, so the
config alone rebuilds the module.

Saving writes a local folder (a run is assembled locally, then published or uploaded whole, see
:mod:`invlearn_ray.training.run_folder`); loading reads any location
(:mod:`invlearn_ray.storage`), so a model in an object store loads on whichever node needs it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from invlearn_ray import storage
from invlearn_ray.errors import UserError
from invlearn_ray.models.backbones import MODELS, Backbone, build_backbone

MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"
FORMAT_VERSION = 1
_RESAVE = "Re-save the model with pipelines/train.py."

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


class ModelFormatError(ValueError, UserError):
    """A folder is not a saved model, or its files are damaged or do not fit together."""


def read_model_description(directory: storage.Location) -> dict[str, Any]:
    """The ``model.json`` of a saved model, checked.

    Raises:
        ModelFormatError: missing, not JSON, another format version, an unknown backbone, or
            sizes that are not positive integers.
    """
    path = storage.join(directory, MODEL_CONFIG)
    if not storage.is_file(path):
        raise ModelFormatError(
            f"{directory} is not a saved model: {MODEL_CONFIG} is missing "
            "(expected the model folder of a training run)"
        )
    try:
        description = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFormatError(f"{path}: not valid JSON ({error}); {_RESAVE}") from None
    if not isinstance(description, dict):
        raise ModelFormatError(f"{path}: not a model description (a JSON object); {_RESAVE}")
    if description.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: model format version {description.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; {_RESAVE}"
        )
    if description.get("backbone") not in MODELS:
        raise ModelFormatError(
            f"{path}: unknown backbone {description.get('backbone')!r}; "
            f"valid names: {sorted(MODELS)}"
        )
    for key in ("n_users", "n_items"):
        value = description.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ModelFormatError(f"{path}: {key} is {value!r}, not a positive integer")
    if not isinstance(description.get("config"), dict):
        raise ModelFormatError(f"{path}: 'config' is missing or not an object; {_RESAVE}")
    return description


def load_tensors(
    path: storage.Location, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """A file written with ``torch.save`` of a dict, read with ``weights_only=True``.

    Raises:
        ModelFormatError: missing, damaged (truncated, overwritten) or not such a dict.
    """
    if not storage.is_file(path):
        raise ModelFormatError(f"{path} is missing; {_RESAVE}")
    data = io.BytesIO(storage.read_bytes(path))
    try:
        state = torch.load(data, map_location=map_location, weights_only=True)
    except Exception as error:  # a damaged file fails in many ways (zip, pickle, EOF, ...)
        # The first sentence of the first line: torch's zip errors run on for a paragraph.
        problem = (str(error).splitlines() or [""])[0].split(". ")[0][:200]
        raise ModelFormatError(
            f"{path}: not readable ({type(error).__name__}: {problem}); the file is "
            f"damaged or not one this code wrote. {_RESAVE}"
        ) from None
    if not isinstance(state, dict):
        raise ModelFormatError(f"{path}: holds a {type(state).__name__}, not a dict. {_RESAVE}")
    return state


def load_model(directory: storage.Location, map_location: str | torch.device = "cpu") -> Backbone:
    """Rebuild a saved backbone from its directory (weights loaded with ``weights_only=True``).

    Raises:
        ModelFormatError: the description is invalid (:func:`read_model_description`), the
            weights file is damaged, or the weights do not fit the description (other sizes,
            missing or extra tensors).
    """
    description = read_model_description(directory)
    weights = storage.join(directory, MODEL_WEIGHTS)
    state = load_tensors(weights, map_location)
    tensor_arguments = {name: state[name] for name in _TENSOR_ARGUMENTS if name in state}
    try:
        model = build_backbone(
            description["backbone"],
            description["n_users"],
            description["n_items"],
            **description["config"],
            **tensor_arguments,
        )
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as error:
        problem = " ".join(str(error).split())
        raise ModelFormatError(
            f"{weights}: the weights do not fit {storage.join(directory, MODEL_CONFIG)} "
            f"({problem[:300]}); the folder mixes files of different models. {_RESAVE}"
        ) from None
    return model.to(map_location)
