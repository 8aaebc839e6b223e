"""HMM topologies (Kaldi's ``<Topology>`` text) and their loading into ``khg.HmmTopology``.

>>> text = make_topo(nonsil_phones=[2, 3, 4], sil_phones=[1])
>>> topo = read_topo(text)
>>> topo.phones
[1, 2, 3, 4]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pykaldi2.utils.errors import DataError


def _entry(phones: Sequence[int], num_states: int) -> str:
    """A left-to-right ``num_states``-state entry, self-loop 0.75, forward 0.25 (as Kaldi)."""
    lines = ["<TopologyEntry>", "<ForPhones>", " ".join(str(p) for p in phones), "</ForPhones>"]
    for s in range(num_states):
        lines.append(
            f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>"
        )
    lines.append(f"<State> {num_states} </State>")
    lines.append("</TopologyEntry>")
    return "\n".join(lines)


def make_topo(
    nonsil_phones: Sequence[int],
    sil_phones: Sequence[int],
    num_nonsil_states: int = 3,
    num_sil_states: int = 3,
) -> str:
    """Kaldi topology text: left-to-right HMMs for non-silence and silence phones.

    Silence also gets a left-to-right HMM (3 states by default): KALDI_NOTES.md found that
    Kaldi's 5-state ergodic silence stalls the flat start with these bindings.
    """
    if not nonsil_phones and not sil_phones:
        raise DataError("make_topo: no phones given", fix="pass the phone ids of phones.txt")
    overlap = set(nonsil_phones) & set(sil_phones)
    if overlap:
        raise DataError(
            f"make_topo: phones {sorted(overlap)} are both silence and non-silence",
            fix="check silence_phones / nonsilence_phones of the lang dir",
        )
    if 0 in set(nonsil_phones) | set(sil_phones):
        raise DataError("make_topo: phone id 0 is <eps> and cannot have an HMM")
    parts = ["<Topology>"]
    if nonsil_phones:
        parts.append(_entry(sorted(nonsil_phones), num_nonsil_states))
    if sil_phones:
        parts.append(_entry(sorted(sil_phones), num_sil_states))
    parts.append("</Topology>")
    return "\n".join(parts) + "\n"


def read_topo(topo: str | os.PathLike):
    """Load a topology from its text or from a file path; returns ``khg.HmmTopology``."""
    from pykaldi2.kaldi import khg

    text = str(topo)
    source = "topology text"
    if "<Topology>" not in text:
        path = Path(topo)
        if not path.is_file():
            raise DataError("no such topology file", file=str(path), fix="pass lang/topo")
        text = path.read_text()
        source = str(path)
    if "<Topology>" not in text:
        raise DataError("not a Kaldi topology (no <Topology>)", file=source)
    t = khg.HmmTopology()
    try:
        t.read(text)
    except Exception as e:  # the binding's own message is cryptic: say where
        raise DataError(f"could not parse topology: {e}", file=source) from None
    return t
