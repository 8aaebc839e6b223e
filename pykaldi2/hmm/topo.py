"""Loading HMM topologies (Kaldi's ``<Topology>`` text, lang/topo) into ``khg.HmmTopology``.

The text itself is written by :func:`pykaldi2.lang.topo.make_topo`.

>>> from pykaldi2.lang.topo import TopoConfig, make_topo
>>> topo = read_topo(make_topo([2, 3, 4], [1], TopoConfig()))
>>> topo.phones
[1, 2, 3, 4]
"""

from __future__ import annotations

import os
from pathlib import Path

from pykaldi2.utils.errors import DataError


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
