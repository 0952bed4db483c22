"""Reading configuration the user wrote: YAML files with line numbers, typed ``--set`` values.

Every command line and every configuration file goes through here, so they all accept the same
spellings and fail with the same kind of message: ``file:line: key 'a.b': what is wrong``.

* :func:`load_yaml_with_lines` parses YAML and remembers the line of every key (duplicate keys,
  which PyYAML silently collapses, are errors);
* :class:`Locator` turns a key path into such a message;
* :func:`check_field_value` types a value as the ``TrainConfig`` field it is for;
* :func:`parse_overrides` reads command-line ``--set KEY=VALUE`` assignments.

PyYAML follows YAML 1.1, which reads ``1e-4`` as a *string*; the loader here also reads
exponent-only numbers as floats, so the obvious spelling works. Ray-free.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

import yaml

from invlearn_ray.errors import UserError
from invlearn_ray.training.config import TrainConfig

KeyPath = tuple[Any, ...]
"""The keys leading to a value: ``("search", "lr")`` is ``lr`` under ``search``."""

TRAIN_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainConfig))
_FIELD_TYPES = typing.get_type_hints(TrainConfig)


class ConfigFileError(ValueError, UserError):
    """A configuration file is malformed; the message names the file, the line and the key."""


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML; return the value and the 1-based line of every key path.

    ``lines[("search", "lr")]`` is the line of the ``lr`` key under ``search``. Duplicate keys
    (which PyYAML silently collapses to the last one) are errors.

    Raises:
        ConfigFileError: on a YAML syntax error or a duplicate key, with ``source:line:column``.
    """
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigFileError(f"{where}: not valid YAML: {error.problem or error}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _record_lines(node, (), lines, source)
    return value, lines


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if path + (key,) in lines:
                raise ConfigFileError(
                    f"{source}:{key_node.start_mark.line + 1}: key {dotted(path + (key,))!r} "
                    f"appears twice (first on line {lines[path + (key,)]}); keep one"
                )
            lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines, source)


def dotted(path: KeyPath) -> str:
    """``("search", "lr")`` → ``search.lr``."""
    return ".".join(str(part) for part in path)


class Locator:
    """Formats errors as ``file:line: key 'a.b': problem`` (the line of the deepest known key).

    Args:
        source: the file (or a stand-in such as ``<mapping>``).
        lines: key paths to lines, from :func:`load_yaml_with_lines` (may be empty).
        error: the exception type :meth:`error` returns.
    """

    def __init__(
        self,
        source: str,
        lines: dict[KeyPath, int],
        error: type[ValueError] = ConfigFileError,
    ) -> None:
        self.source, self.lines, self.error_type = source, lines, error

    def error(self, path: KeyPath, problem: str) -> ValueError:
        line = None
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line else self.source
        key = f" {dotted(path)!r}" if path else ""
        return self.error_type(f"{where}: key{key}: {problem}" if path else f"{where}: {problem}")


def field_type(name: str) -> type:
    """The type of ``TrainConfig.name``."""
    return _FIELD_TYPES[name]


def _article(kind: type) -> str:
    name = kind.__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def check_field_value(name: str, value: Any) -> Any:
    """``value`` as the type of ``TrainConfig.name`` (ints are accepted for float fields).

    Raises:
        ValueError: the value has the wrong type (booleans are never numbers here).
    """
    expected = field_type(name)
    if expected is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expects true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"expects {_article(expected)}, got the boolean {value!r}")
    if expected is float and isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expects a finite number, got {value!r}")
        return float(value)
    if expected is int and isinstance(value, int):
        return value
    if expected is str and isinstance(value, str):
        return value
    raise ValueError(f"expects {_article(expected)}, got {type(value).__name__} {value!r}")


def parse_overrides(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["epochs=10", "lr=1e-3"]`` (command-line ``--set``) as checked ``TrainConfig`` values.

    Values are read as YAML scalars (``1e-3`` is a float, ``true`` a boolean, ``gmf`` a
    string), then checked against the field's type.

    Raises:
        ValueError: not ``KEY=VALUE``, an unknown field, or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for text in assignments:
        name, equals, raw = text.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"--set takes KEY=VALUE, got {text!r}")
        if name not in TRAIN_FIELDS:
            raise ValueError(
                f"--set {text!r}: {name!r} is not a TrainConfig field; "
                f"valid: {sorted(TRAIN_FIELDS)}"
            )
        value = yaml.load(raw, Loader=YamlLoader) if raw.strip() else raw
        try:
            values[name] = check_field_value(name, value)
        except ValueError as error:
            raise ValueError(f"--set {text!r}: TrainConfig.{name} {error}") from None
    return values
