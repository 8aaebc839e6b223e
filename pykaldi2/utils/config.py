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

Every field is checked against its annotation before the class's own ``__post_init__`` runs
(by ``from_dict`` and by direct construction alike): ``int`` takes integers only (``1.5`` and
``true`` are errors), ``float`` numbers (and numeric strings such as ``"2e-5"``, which YAML 1.1
reads as strings: converted), ``bool`` true/false, ``str`` strings or paths, ``list[X]`` /
``tuple[X, ...]`` lists of X (``list[str]`` also one string: a data-dir option), ``dict``
mappings, a section its class or a mapping, ``X | None`` also null. Declare a field's range
with :func:`option` (``lr: float = option(1e-3, gt=0)``). Errors name the key:
``"TrainerConfig.lr must be > 0, got -0.01"``, ``"bad option value: BlstmConfig.hidden:
expected an integer, got [32]"``.

    >>> @dataclasses.dataclass
    ... class BeamConfig(ConfigMixin):
    ...     beam: float = 13.0
    >>> BeamConfig.from_dict({"beem": 1.0})
    Traceback (most recent call last):
    pykaldi2.utils.errors.DataError: BeamConfig: unknown keys beem. Fix: valid keys: beam
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import sys
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "Bounds",
    "ConfigMixin",
    "check_fields",
    "check_keys",
    "option",
    "read_yaml_mapping",
    "to_plain",
]


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


# ---------------------------------------------------------------------------------------------
# Typed, range-checked fields
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Bounds:
    """The allowed values of a config field (:func:`option`): ``gt`` / ``ge`` / ``lt`` / ``le``
    for numbers (each element of a list or tuple), ``choices`` for anything."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (``"must be > 0"``), or None."""
        if self.choices is not None:
            if value not in self.choices:
                return f"must be one of {', '.join(map(repr, self.choices))}"
            return None
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                continue
            for bound, op, ok in (
                (self.gt, ">", lambda a, b: a > b),
                (self.ge, ">=", lambda a, b: a >= b),
                (self.lt, "<", lambda a, b: a < b),
                (self.le, "<=", lambda a, b: a <= b),
            ):
                if bound is not None and not ok(v, bound):
                    return f"must be {op} {bound:g}"
        return None

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {', '.join(map(repr, self.choices))}"
        return " and ".join(
            f"{op} {b:g}"
            for b, op in ((self.gt, ">"), (self.ge, ">="), (self.lt, "<"), (self.le, "<="))
            if b is not None
        )


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Collection | None = None,
) -> Any:
    """A dataclass field with a checked range: ``lr: float = option(1e-3, gt=0)``,
    ``dropout: float = option(0.1, ge=0, lt=1)``, ``optimizer: str = option("adam",
    choices=("adam", "sgd"))``. ``ConfigMixin`` checks it (after the type) with a message
    naming the key."""
    bounds = Bounds(gt, ge, lt, le, tuple(choices) if choices is not None else None)
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"bounds": bounds}
    )


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (None where it cannot be resolved: unchecked)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        glob = getattr(sys.modules.get(klass.__module__), "__dict__", {})
        for name, ann in klass.__dict__.get("__annotations__", {}).items():
            if isinstance(ann, str):
                try:
                    ann = eval(ann, glob, dict(vars(klass)))  # noqa: S307 (our own annotations)
                except Exception:
                    ann = None
            out[name] = ann
    return out


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        elem = [a for a in args if a is not Ellipsis]
        if elem and all(a == elem[0] for a in elem):
            inner = _describe(elem[0])
            inner = {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(
                inner, inner
            )
            n = f"{len(args)} " if Ellipsis not in args and origin is tuple else ""
            return f"a list of {n}{inner}"
        return "a list"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__} section (a mapping)"
    return getattr(tp, "__name__", str(tp))


_NO = object()  # "does not conform"


def _conform(value: Any, tp: Any) -> Any:
    """``value`` (or its conversion: numeric strings for floats) if it fits the annotation
    ``tp``, else :data:`_NO`. Annotations this does not understand accept anything."""
    if tp is None or tp is Any or isinstance(tp, typing.TypeVar):
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            v = _conform(value, arm)
            if v is not _NO:
                return v
        return _NO
    if origin is typing.ClassVar:
        return value
    if origin is typing.Literal:
        return value if value in args else _NO
    if tp is type(None):
        return value if value is None else _NO
    if tp is bool:
        return value if isinstance(value, bool) or type(value).__name__ == "bool_" else _NO
    if tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return value if ok else _NO
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                return _NO
        return _NO
    if tp is str:
        # null and paths pass: the classes normalize them (``str(self.x or "")``)
        return value if value is None or isinstance(value, str | os.PathLike) else _NO
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if args == (str,) and (value is None or isinstance(value, str | os.PathLike)):
            return value  # one data dir for a list of them
        if getattr(value, "ndim", 0) == 1 and hasattr(value, "tolist"):
            value = value.tolist()  # a numpy vector
        if not isinstance(value, list | tuple):
            return _NO
        if not args:
            return value
        if origin is tuple and Ellipsis not in args:
            if len(value) != len(args):
                return _NO
            elems = args
        else:
            elems = (args[0],) * len(value)
        out = [_conform(v, a) for v, a in zip(value, elems)]
        if any(v is _NO for v in out):
            return _NO
        return type(value)(out) if any(a is not b for a, b in zip(out, value)) else value
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return value if value is None or isinstance(value, Mapping) else _NO
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if value is None or isinstance(value, Mapping | tp) else _NO
    if isinstance(tp, type):
        return value if isinstance(value, tp) else _NO
    return value


def check_fields(cls: type, values: Mapping[str, Any], where: str | None = None) -> dict:
    """``values`` (field -> value) checked against ``cls``'s field annotations and
    :func:`option` bounds; returns them with numeric strings of float fields converted.

    Raises a :class:`DataError` naming ``where.key`` (``where``: the class name by default):
    ``"bad option value: TrainerConfig.lr: expected a number, got 'abc'"``, ``"TrainerConfig.lr
    must be > 0, got -0.01"``.
    """
    where = where or cls.__name__
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        f = fields.get(name)
        if f is None:
            continue
        v = _conform(value, hints.get(name))
        if v is _NO:
            raise DataError(
                f"bad option value: {where}.{name}: expected {_describe(hints[name])}, "
                f"got {value!r}"
            )
        bounds = f.metadata.get("bounds")
        problem = bounds.problem(v) if bounds is not None else None
        if problem:
            raise DataError(f"{where}.{name} {problem}, got {value!r}")
        out[name] = v
    return out


def _checked_post_init(own):
    """``own`` (a class's ``__post_init__``) preceded by :func:`check_fields` on the instance,
    for the outermost class only (a ``super().__post_init__()`` does not check again)."""

    @functools.wraps(own)
    def __post_init__(self) -> None:
        if type(self).__post_init__ is __post_init__:
            values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
            for name, v in check_fields(type(self), values).items():
                if v is not values[name]:
                    object.__setattr__(self, name, v)
        own(self)

    __post_init__._checks_fields = True  # type: ignore[attr-defined]
    return __post_init__


# ---------------------------------------------------------------------------------------------
# The mixin
# ---------------------------------------------------------------------------------------------
class ConfigMixin:
    """``to_dict`` / ``from_dict`` / ``from_yaml`` for a config dataclass (see module doc), and
    the field checks of :func:`check_fields` on every construction."""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        own = cls.__dict__.get("__post_init__")
        if own is None:
            own = getattr(cls, "__post_init__", None)
            own = getattr(own, "__wrapped__", own)
            if own is None:

                def own(self) -> None:
                    return None

        elif getattr(own, "_checks_fields", False):
            return
        cls.__post_init__ = _checked_post_init(own)

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
            return cls(**check_fields(cls, d, where))
        try:
            return cls(**check_fields(cls, d, where))
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

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """{field: its default, as ``to_dict`` writes it} for the fields that have one."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = to_plain(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = to_plain(f.default_factory())
        return out

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
