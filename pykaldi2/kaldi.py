"""The one place that imports the Kaldi bindings.

Each PyPI binding bundles its own OpenFst, and some import orders deadlock in a static
initializer (seen under gdb; shared/KALDI_NOTES.md). The safe order is ``kaldi_hmm_gmm``, then
``kaldi_decoder``, then ``kaldifst`` (loaded on first use); ``kaldilm`` is only ever imported in a
subprocess.

Everything else in pykaldi2 gets the bindings from here::

    >>> from pykaldi2.kaldi import khg, kaldifst, kaldi_decoder
    >>> from pykaldi2.kaldi import arpa2fst      # runs kaldilm in a subprocess

``kaldi_native_fbank`` and ``kaldiio`` bundle no OpenFst and may be imported directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

# The order below is the point of this module: never sort these imports.
# isort: off
import kaldi_hmm_gmm as khg  # 1st
import kaldi_decoder  # 2nd

# isort: on


class _LazyModule:
    """A binding imported on its first attribute access, which comes after the imports above,
    so the safe order holds. kaldifst (with the OpenFst it bundles) is 11 MB of resident memory
    that a decoding job never touches: ``pykaldi2 decode`` runs without loading it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<binding {self._name!r} ({state})>"


kaldifst = _LazyModule("kaldifst")  # 3rd

__all__ = ["khg", "kaldi_decoder", "kaldifst", "arpa2fst", "check_versions", "PINNED"]

#: Versions this code was verified against (shared/KALDI_NOTES.md).
PINNED = {
    "kaldi-hmm-gmm": "1.1.4",
    "kaldifst": "1.7.17",
    "kaldi-decoder": "0.2.11",
    "kaldilm": "1.15.5",
}


def check_versions() -> dict[str, str]:
    """Raise a clear error if an installed Kaldi binding is not the pinned version.

    Returns the installed versions, e.g. ``{"kaldifst": "1.7.17", ...}``.
    """
    found: dict[str, str] = {}
    bad = []
    for name, want in PINNED.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        found[name] = have
        if have != want:
            bad.append(f"{name}=={have} (need {want})")
    if bad:
        raise RuntimeError(
            "Kaldi bindings at the wrong version: " + ", ".join(bad) + ". "
            "Fix: `make install` (or pip install -e . in a fresh venv); kaldifst 1.8 changed the "
            "FST type and breaks every kaldi-hmm-gmm call that takes an FST."
        )
    return found


_ARPA2FST_SCRIPT = r"""
import json, sys
import kaldilm
kw = json.loads(sys.argv[1])
out = kaldilm.arpa2fst(**kw)
if not kw.get("output_fst"):
    sys.stdout.write(out)
"""


def arpa2fst(
    arpa: str | os.PathLike,
    output_fst: str | os.PathLike,
    *,
    read_symbol_table: str | os.PathLike,
    disambig_symbol: str = "#0",
    max_order: int = -1,
    bos: str = "<s>",
    eos: str = "</s>",
) -> None:
    """Convert an ARPA LM into a binary G.fst (Kaldi's arpa2fst) with kaldilm, in a subprocess.

    kaldilm is imported in a child process because importing it in the same process as the other
    bindings can hang. ``read_symbol_table`` is words.txt; words of the ARPA file missing from it
    make kaldilm fail, and the error is re-raised with the ARPA file named.
    """
    kw = {
        "input_arpa": str(arpa),
        "output_fst": str(output_fst),
        "disambig_symbol": disambig_symbol,
        "read_symbol_table": str(read_symbol_table),
        "max_order": max_order,
        "bos_symbol": bos,  # kaldilm 1.15.5 names them bos_symbol/eos_symbol
        "eos_symbol": eos,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _ARPA2FST_SCRIPT, json.dumps(kw)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise RuntimeError(
            f"arpa2fst failed on {arpa} (symbol table {read_symbol_table}):\n{tail}\n"
            "Fix: every word of the ARPA file must be in words.txt; check <s>/</s> and the file's "
            "\\data\\ header."
        )
