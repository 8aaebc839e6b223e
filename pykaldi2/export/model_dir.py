"""A self-contained model directory: everything ``pykaldi2.load_model`` needs, and a version.

::

    exp/mono/export/
      model.yaml        format_version, kind (gmm | hybrid | chain | transducer), pykaldi2_version,
                        created, configs (features, cmvn, decoder, model, ...),
                        files: role -> {path, bytes, sha256}
      model.mdl         the files, named after their role (``model``, ``HCLG``, ``words``,
      HCLG.fst          ``tokenizer``, ``tree``, ``priors``, ...) with their source's suffix;
      words.txt         a source directory (a lang dir) is copied whole as ``<role>/``
      weights.pt        a torch state_dict, when given (role ``weights``)
      checksums.sha256  the sha256 of every file above, model.yaml included (``sha256sum -c``)

The directory is built in a temp sibling and renamed into place (atomic). Loading checks every
file against ``checksums.sha256`` (dirs written before it: each listed file's size and sha256
from model.yaml), the ``format_version`` (older and newer formats are a clear error, never a
traceback from a pickle), the ``kind``, and that every listed file is there.

    >>> save_model_dir("exp/mono/export", "gmm", files={"model": "exp/mono/final.mdl",
    ...                "HCLG": "exp/mono/graph/HCLG.fst", "words": "exp/mono/graph/words.txt"},
    ...                configs={"features": {"feat_type": "mfcc", ...}})
    >>> md = load_model_dir("exp/mono/export"); md.kind, md.file("HCLG")
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pykaldi2 import __version__
from pykaldi2.utils.checksums import MANIFEST, sha256_file, verify_checksums, write_checksums
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir

#: The format this pykaldi2 writes; it reads formats MIN_FORMAT_VERSION..FORMAT_VERSION.
FORMAT_VERSION = 1
MIN_FORMAT_VERSION = 1
KINDS = ("gmm", "hybrid", "chain", "transducer")
MODEL_YAML = "model.yaml"
WEIGHTS = "weights"


@dataclass
class ModelDir:
    """A loaded ``model.yaml``: what is in a model directory and where.

    Attributes:
        path: the directory.
        kind: ``gmm``, ``hybrid``, ``chain`` or ``transducer``.
        format_version: the format it was written in.
        pykaldi2_version: the pykaldi2 that wrote it.
        configs: name -> config dict (``features``, ``cmvn``, ``decoder``, ``model``, ...).
        files: role -> path relative to ``path``.
    """

    path: Path
    kind: str
    format_version: int
    pykaldi2_version: str
    configs: dict[str, dict] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def file(self, role: str) -> Path:
        """The absolute path of the file with ``role`` (a :class:`DataError` if none)."""
        if role not in self.files:
            raise DataError(
                f"this {self.kind} model has no {role!r} file (it has: "
                f"{', '.join(sorted(self.files)) or 'none'})",
                file=str(self.path / MODEL_YAML),
                fix="re-export the model with that file",
            )
        return self.path / self.files[role]

    def config(self, name: str, default: dict | None = None) -> dict:
        """The config dict ``name``; ``default`` (or a :class:`DataError`) when absent."""
        if name in self.configs:
            return dict(self.configs[name])
        if default is not None:
            return dict(default)
        raise DataError(
            f"this {self.kind} model has no {name!r} config",
            file=str(self.path / MODEL_YAML),
            fix="re-export the model with that config",
        )

    def load_state(self) -> dict:
        """The torch state_dict saved as ``weights.pt`` (on the CPU)."""
        import torch

        return torch.load(self.file(WEIGHTS), map_location="cpu", weights_only=True)


def _dest_name(role: str, src: Path) -> str:
    if not role or "/" in role or role.startswith(".") or role == MODEL_YAML:
        raise ValueError(f"bad file role {role!r}: a plain name like 'HCLG' or 'tokenizer'")
    return role if src.is_dir() else role + src.suffix


def _describe(root: Path, rel: str) -> dict[str, Any]:
    p = root / rel
    if p.is_dir():
        return {"path": rel, "bytes": sum(f.stat().st_size for f in p.rglob("*") if f.is_file())}
    return {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def save_model_dir(
    path: str | os.PathLike,
    kind: str,
    *,
    files: Mapping[str, str | os.PathLike] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    state: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ModelDir:
    """Write a model directory at ``path`` atomically.

    Args:
        path: the directory to create.
        kind: one of :data:`KINDS`.
        files: role -> source file or directory, copied in (see the module docstring).
        configs: name -> config dict (plain YAML-safe values, e.g. ``Config.to_dict()``).
        state: a torch ``state_dict``, saved as ``weights.pt`` (role ``weights``).
        overwrite: replace an existing ``path``; otherwise that is an error.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    files = {r: Path(p) for r, p in (files or {}).items()}
    for role, src in files.items():
        if not src.exists():
            raise DataError(f"file for role {role!r} not found", file=str(src))
    if state is not None and WEIGHTS in files:
        raise ValueError(f"give the weights either as state= or as files[{WEIGHTS!r}], not both")
    configs = {name: dict(c) for name, c in (configs or {}).items()}
    try:
        yaml.safe_dump(configs)
    except yaml.YAMLError as e:
        raise ValueError(f"configs must hold plain values (numbers, strings, lists): {e}") from e
    if Path(path).exists() and not overwrite:
        raise DataError("model directory exists", file=str(path), fix="remove it or overwrite")

    with atomic_dir(path) as tmp:
        listed: dict[str, dict[str, Any]] = {}
        for role, src in files.items():
            rel = _dest_name(role, src)
            if src.is_dir():
                shutil.copytree(src, tmp / rel)
            else:
                shutil.copyfile(src, tmp / rel)
            listed[role] = _describe(tmp, rel)
        if state is not None:
            import torch

            torch.save(dict(state), tmp / f"{WEIGHTS}.pt")
            listed[WEIGHTS] = _describe(tmp, f"{WEIGHTS}.pt")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "pykaldi2_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "configs": configs,
            "files": listed,
        }
        (tmp / MODEL_YAML).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        write_checksums(tmp)
    return load_model_dir(path, verify=False)


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string (``"0.1.0.dev3+g1a2b"`` -> (0, 1, 0)); () when
    it has none (an unknown writer), which is never newer than a release."""
    nums = []
    for part in str(version).split("+")[0].split("."):
        if not part.isdigit():
            break
        nums.append(int(part))
    return tuple(nums)


def load_model_dir(path: str | os.PathLike, verify: bool = True) -> ModelDir:
    """Read and check ``path/model.yaml``; ``verify`` (default) also checks every file's sha256
    (``checksums.sha256``, or model.yaml's list in dirs written before it)."""
    path = Path(path)
    meta_file = path / MODEL_YAML
    if not meta_file.is_file():
        raise DataError(
            f"not a pykaldi2 model directory (no {MODEL_YAML})",
            file=str(path),
            fix="pass the folder written by save_model_dir / `pykaldi2 export-gmm-model`",
        )
    manifest = (path / MANIFEST).is_file()
    try:
        meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"unreadable YAML: {e}", file=str(meta_file)) from None
    if not isinstance(meta, dict):
        raise DataError("expected a YAML mapping", file=str(meta_file))
    version = meta.get("format_version")
    writer = meta.get("pykaldi2_version", "an unknown version")
    if not isinstance(version, int):
        raise DataError("no integer format_version", file=str(meta_file))
    if version > FORMAT_VERSION:
        reads = f"this pykaldi2 {__version__} reads formats {MIN_FORMAT_VERSION}..{FORMAT_VERSION}"
        if _release(writer) > _release(__version__):
            raise DataError(
                f"model format {version} was written by pykaldi2 {writer}; {reads}",
                file=str(meta_file),
                fix=f"upgrade pykaldi2 to {writer} or later (pip install -U pykaldi2)",
            )
        # Not a newer release (e.g. the same 0.1.0): a development build or an edited file.
        raise DataError(
            f"model format {version} is newer than {reads}, yet model.yaml names pykaldi2 "
            f"{writer} as its writer (not a newer release: a development build of pykaldi2, "
            "or an edited model.yaml)",
            file=str(meta_file),
            fix=f"re-export the model with this pykaldi2 {__version__}, or load it with the "
            "pykaldi2 build that wrote it",
        )
    if version < MIN_FORMAT_VERSION:
        raise DataError(
            f"model format {version} (pykaldi2 {writer}) is older than this pykaldi2 "
            f"{__version__} reads ({MIN_FORMAT_VERSION}..{FORMAT_VERSION})",
            file=str(meta_file),
            fix=f"re-export the model with pykaldi2 {__version__}, or use pykaldi2 {writer}",
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise DataError(
            f"unknown model kind {kind!r} (known: {', '.join(KINDS)})", file=str(meta_file)
        )
    files: dict[str, str] = {}
    for role, info in (meta.get("files") or {}).items():
        p = path / info["path"]
        if not p.exists():
            raise DataError(
                f"the {role!r} file {info['path']} listed in {MODEL_YAML} is missing",
                file=str(p),
                fix="copy the whole model directory, or re-export it",
            )
        if p.is_file() and p.stat().st_size != info.get("bytes", p.stat().st_size):
            raise DataError(f"{role!r} file is truncated or changed", file=str(p), fix="re-export")
        if verify and not manifest and "sha256" in info and sha256_file(p) != info["sha256"]:
            raise DataError(f"{role!r} file fails its sha256 check", file=str(p), fix="re-export")
        files[role] = info["path"]
    if verify and manifest:
        verify_checksums(path, fix="copy the whole model directory again, or re-export it")
    return ModelDir(
        path=path.resolve(),
        kind=kind,
        format_version=version,
        pykaldi2_version=str(writer),
        configs=dict(meta.get("configs") or {}),
        files=files,
    )
