"""The config-dataclass pattern in one place: ``to_dict`` / ``from_dict`` / ``from_yaml``.

A config is a ``@dataclass`` that validates itself in ``__post_init__``; mixing in
:class:`ConfigMixin` gives it

- ``to_dict()``: a YAML/JSON-safe dict (nested configs through their own ``to_dict``, tuples
  as lists);
- ``from_dict(d, source=None)``: unknown keys are a :class:`DataError` naming them and the valid
  ones; with ``source`` (the file the dict came from) every error names that file;
- ``from_yaml(path)``: ``from_dict`` of a YAML file, errors naming the file.

Nested sections declared as ``field(default_factory=SectionClass)`` are built from plain dicts
by :meth:`ConfigMixin.build_sections` (call it first thing in ``__post_init__``).

    >>> @dataclasses.dataclass
    ... class BeamConfig(ConfigMixin):
    ...     beam: float = 13.0
    >>> BeamConfig.from_dict({"beem": 1.0})
    Traceback (most recent call last):
    pykaldi2.utils.errors.DataError: BeamConfig: unknown keys beem. Fix: valid keys: beam
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from typing import Any

from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = ["ConfigMixin", "check_keys", "read_yaml_mapping", "to_plain"]


def check_keys(
    d: Mapping[str, Any],
    valid: Collection[str],
    *,
    where: str = "",
    what: str = "keys",
    source: str | None = None,
) -> None:
    """Raise a :class:`DataError` ``"{where}: unknown {what} a, b"`` if ``d`` has keys outside
    ``valid`` (the fix lists the valid ones; ``source`` is the file named)."""
    unknown = sorted(set(d) - set(valid))
    if unknown:
        prefix = f"{where}: " if where else ""
        raise DataError(
            f"{prefix}unknown {what} {', '.join(map(str, unknown))}",
            file=source,
            fix=f"valid keys: {', '.join(sorted(valid))}",
        )


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file (``{}`` when empty); unreadable files, YAML syntax errors and
    non-mappings are a :class:`DataError` naming the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except OSError as e:
        raise DataError(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    except yaml.YAMLError as e:
        raise DataError(f"not valid YAML: {e}", file=str(path)) from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise DataError(f"a {what} must be a YAML mapping", file=str(path))
    return d


def to_plain(value: Any) -> Any:
    """``value`` with configs as dicts (their ``to_dict``) and tuples as lists, recursively."""
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


class ConfigMixin:
    """``to_dict`` / ``from_dict`` / ``from_yaml`` for a config dataclass (see module doc)."""

    def to_dict(self) -> dict[str, Any]:
        """All fields, YAML/JSON-safe; ``from_dict(to_dict())`` gives an equal config."""
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any] | None, source: str | None = None, *, where: str | None = None
    ):
        """Build and validate from a dict (``None`` means all defaults).

        Unknown keys raise a :class:`DataError` naming them, the valid ones and ``where``
        (default: the class name). With ``source`` (the file ``d`` was read from), bad values
        are a :class:`DataError` naming that file too.
        """
        d = {} if d is None else d
        if not isinstance(d, Mapping):
            raise DataError(f"{where or cls.__name__}: expected a mapping, got {d!r}", file=source)
        check_keys(d, cls.field_names(), where=where or cls.__name__, source=source)
        if source is None:
            return cls(**d)
        try:
            return cls(**d)
        except Pykaldi2Error as e:
            raise DataError(str(e), file=source) from None
        except (TypeError, ValueError) as e:
            raise DataError(f"bad option value: {e}", file=source) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike):
        """:meth:`from_dict` of a YAML file; every error names the file."""
        return cls.from_dict(read_yaml_mapping(path), source=str(path))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def build_sections(self) -> None:
        """Replace dict (or ``None``: all defaults) values of fields declared
        ``field(default_factory=SomeConfig)`` by ``SomeConfig.from_dict(value)`` (or
        ``SomeConfig(**value)`` without ``from_dict``); unknown keys name ``Class.field``."""
        for f in dataclasses.fields(self):
            section = f.default_factory
            value = getattr(self, f.name)
            if not (dataclasses.is_dataclass(section) and isinstance(section, type)):
                continue
            if value is None or isinstance(value, Mapping):
                value = value or {}
                if issubclass(section, ConfigMixin):
                    value = section.from_dict(value, where=f"{type(self).__name__}.{f.name}")
                elif hasattr(section, "from_dict"):
                    value = section.from_dict(value)
                else:
                    value = section(**value)
                setattr(self, f.name, value)
