"""What every training command's config shares: ``--override key=value``, YAML load/save,
``base:`` (a config that is another one plus changes), list-valued data options and the
``simulation:`` option.

>>> cfg = TrainChainConfig.load("conf/chain.yaml", ["trainer.lr=5e-4"])
>>> cfg.save(exp_dir / "config.yaml")      # resolved, with provenance
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.utils.config import ConfigMixin, read_yaml_mapping
from pykaldi2.utils.errors import DataError, Pykaldi2Error


def apply_overrides(d: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` + ``["trainer.lr=0.5", "seed=3"]`` -> a new nested dict.

    Values are parsed as YAML (``3`` is an int, ``[a, b]`` a list, ``true`` a bool), except
    that numbers in exponent notation without a dot (``2e-5``, which YAML 1.1 reads as a
    string) are floats, as in YAML 1.2.
    """
    import re

    import yaml

    exponent = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")

    out = copy.deepcopy(dict(d))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise Pykaldi2Error(f"--override {item!r}: expected key=value (e.g. trainer.lr=0.5)")
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise Pykaldi2Error(f"--override {item!r}: {p} is not a section")
        v = yaml.safe_load(value)
        node[leaf] = float(v) if isinstance(v, str) and exponent.match(v.strip()) else v
    return out


def merge_configs(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: sections (mappings) merged key by key, recursively; any other
    value of ``child`` (a scalar, a list, null) replaces the base's."""
    out = copy.deepcopy(dict(base))
    for k, v in child.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_configs(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_config(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A training config's mapping with its ``base:`` resolved.

    ``base: FILE`` (relative to the directory of the config that names it) makes the config
    FILE's options with this file's merged over them (:func:`merge_configs`), so a variant
    says only what it changes; a base may have a base. The ``config:`` section of a saved
    EXP_DIR/config.yaml is read as a config (it is resolved: it has no base). Errors name the
    file.
    """
    d = read_yaml_mapping(path)
    if set(d) == {"config", "provenance"}:
        d = d["config"]
    base = d.pop("base", None)
    if base is None:
        return d
    here = Path(path).resolve()
    if not isinstance(base, str) or not base:
        raise DataError(f"base: expected the path of a YAML config, got {base!r}", file=str(path))
    target = (here.parent / base).resolve()
    if target in (*_chain, here):
        cycle = " -> ".join(str(p) for p in (*_chain, here, target))
        raise DataError(f"base: the configs name each other in a cycle ({cycle})",
                        file=str(path), fix="remove one of the base: lines")  # fmt: skip
    if not target.is_file():
        raise DataError(f"base: no such config file {target}", file=str(path),
                        fix="give a path relative to this config's directory")  # fmt: skip
    return merge_configs(read_config(target, (*_chain, here)), d)


class TrainConfigMixin(ConfigMixin):
    """``load`` (YAML + overrides) and ``save`` (resolved + provenance) for training configs;
    ``from_dict(d, source=...)`` is the class's own (ConfigMixin's unless overridden)."""

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: Sequence[str] = ()):
        """Read a YAML config (a bare mapping, or the ``config:`` section of a saved
        config.yaml; ``base:`` resolved, :func:`read_config`) and apply ``key=value``
        overrides (dotted keys, YAML values)."""
        d = read_config(path)
        return cls.from_dict(apply_overrides(d, overrides), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config with provenance (git sha, package versions), atomically."""
        from pykaldi2.utils.provenance import save_config

        save_config(path, self.to_dict())


def as_list(v: str | Sequence[str] | None) -> list[str]:
    """A data-dir option (one path, a list of paths, or empty) as a list of str."""
    if v is None or v == "":
        return []
    return [str(v)] if isinstance(v, (str, os.PathLike)) else [str(x) for x in v]


def simulation_config(value: Any) -> SimulationConfig | None:
    """The ``simulation:`` option of a training config -> a validated SimulationConfig or None.

    ``value``: None / "" (no simulation), the path of a sim.yaml, a mapping (the resolved config
    that EXP_DIR/config.yaml holds) or a SimulationConfig. Errors name the file.
    """
    if value is None or value == "":
        return None
    if isinstance(value, SimulationConfig):
        return value
    if isinstance(value, Mapping):
        return SimulationConfig.from_dict(dict(value), where="simulation")
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"simulation: expected the path of a sim.yaml or null, got {value!r}")
    if not Path(value).is_file():
        raise DataError(
            "simulation: no such simulation config file",
            file=str(value),
            fix="give the path of a sim.yaml (see `pykaldi2 simulate --help`) or null",
        )
    return SimulationConfig.from_yaml(value)


def options_from_dict(cls, d: Mapping[str, Any], source: str = "config"):
    """``cls(**d)`` for a training config class (``from_dict = classmethod(options_from_dict)``):
    unknown keys and bad values raise a DataError naming ``source``."""
    if not isinstance(d, Mapping):
        raise DataError("expected a mapping of train-ce options", file=source)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(unknown)}",
            file=source,
            fix=f"valid options: {', '.join(sorted(known))}",
        )
    try:
        return cls(**d)
    except Pykaldi2Error as e:
        raise DataError(str(e), file=source) from None
    except (TypeError, ValueError) as e:
        raise DataError(f"bad option value: {e}", file=source) from None
