"""HMM topology text (Kaldi's ``lang/topo``, the output of utils/gen_topo.pl).

Three kinds of :class:`TopoEntry`:

- ``left-to-right`` (Kaldi's default for nonsilence phones with ``num_states=3``): state ``i``
  loops with 0.75 and moves on with 0.25; the last state leads to the final (non-emitting)
  state.
- ``ergodic`` (Kaldi's 5-state silence): state 0 enters any of ``0..n-2``, the middle states are
  fully connected among ``1..n-1``, the last state exits. It stalls flat-start training here
  (shared/KALDI_NOTES.md), so our default silence topology is left-to-right too.
- ``chain`` (LF-MMI): one state with separate forward and self-loop pdf classes.

    >>> text = make_topo([4, 5, 6], [1, 2], TopoConfig())
    >>> from pykaldi2.kaldi import khg
    >>> t = khg.HmmTopology(); t.read(text)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pykaldi2.utils.config import ConfigMixin

KINDS = ("left-to-right", "ergodic", "chain")


@dataclass
class TopoEntry(ConfigMixin):
    """The topology of one class of phones."""

    kind: str = "left-to-right"
    num_states: int = 3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"topology kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "chain":
            self.num_states = 1
        if self.num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {self.num_states}")
        if self.kind == "ergodic" and self.num_states < 3:
            raise ValueError("an ergodic topology needs at least 3 states")

    def states_text(self) -> str:
        """The ``<State>`` lines of this entry."""
        n = self.num_states
        lines = []
        if self.kind == "chain":
            lines.append(
                "<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 "
                "<Transition> 0 0.5 <Transition> 1 0.5 </State>"
            )
        elif self.kind == "left-to-right":
            for s in range(n):
                lines.append(
                    f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 "
                    f"<Transition> {s + 1} 0.25 </State>"
                )
        else:  # ergodic, as utils/gen_topo.pl
            p = 1.0 / (n - 1)
            for s in range(n - 1):
                dests = range(0, n - 1) if s == 0 else range(1, n)
                trans = " ".join(f"<Transition> {d} {p:g}" for d in dests)
                lines.append(f"<State> {s} <PdfClass> {s} {trans} </State>")
            lines.append(
                f"<State> {n - 1} <PdfClass> {n - 1} <Transition> {n - 1} 0.75 "
                f"<Transition> {n} 0.25 </State>"
            )
        lines.append(f"<State> {n} </State>")
        return "\n".join(lines) + "\n"


@dataclass
class TopoConfig(ConfigMixin):
    """Topologies of nonsilence and silence phones (``to_dict``/``from_dict`` for saving)."""

    nonsilence: TopoEntry = field(default_factory=TopoEntry)
    silence: TopoEntry = field(default_factory=TopoEntry)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(
        cls, d: dict, source: str | None = None, *, where: str | None = None
    ) -> TopoConfig:
        unknown = set(d) - {"nonsilence", "silence"}
        if unknown:
            raise ValueError(f"unknown TopoConfig keys {sorted(unknown)}")
        return cls(**{k: TopoEntry(**v) for k, v in d.items()})

    @classmethod
    def kaldi_default(cls) -> TopoConfig:
        """Kaldi's gen_topo.pl 3 5: 3-state nonsilence, 5-state ergodic silence."""
        return cls(TopoEntry("left-to-right", 3), TopoEntry("ergodic", 5))

    @classmethod
    def chain(cls) -> TopoConfig:
        """The 1-state LF-MMI topology for all phones."""
        return cls(TopoEntry("chain"), TopoEntry("chain"))


def make_topo(nonsilence_ids: list[int], silence_ids: list[int], config: TopoConfig) -> str:
    """The topology text for phone ids ``nonsilence_ids`` and ``silence_ids`` (phones.txt ids)."""
    groups = [(nonsilence_ids, config.nonsilence), (silence_ids, config.silence)]
    if config.nonsilence == config.silence:  # one entry, as Kaldi writes for equal topologies
        groups = [(sorted(nonsilence_ids + silence_ids), config.nonsilence)]
    out = ["<Topology>\n"]
    for ids, entry in groups:
        if not ids:
            continue
        out.append("<TopologyEntry>\n<ForPhones>\n")
        out.append(" ".join(str(i) for i in ids) + "\n</ForPhones>\n")
        out.append(entry.states_text())
        out.append("</TopologyEntry>\n")
    out.append("</Topology>\n")
    return "".join(out)
