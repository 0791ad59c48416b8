"""What labelled loopback traffic to generate, and how to label what was captured.

:class:`TrafficPlan` (duration, scale, seed, subnets, when each class begins),
:data:`CLASSES`, :func:`class_of` (the true class of a flow endpoint address) and
:class:`TrafficStats` (what the generators did). Pure data, no Twisted: the benchmark
labels flows with it without starting any traffic.

The dataclasses are built and read on whichever thread runs the Twisted reactor the
traffic is given (the main thread in ``netmon.bench.cluster``, the reactor thread in
``netmon demo``); :func:`class_of` is pure and runs anywhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Behaviour classes in subnet order: class i uses 127.0.(subnet_base + 1 + i).0/24.
CLASSES = ("bulk", "web", "dns", "interactive", "scan", "icmp", "cbr")


@dataclass(frozen=True)
class TrafficPlan:
    """What to generate. ``scale`` multiplies client counts (0.5 for a quick CI run);
    ``subnet_base`` N puts class i in 127.0.(N+1+i).0/24."""

    duration: float = 20.0
    scale: float = 1.0
    seed: int = 0
    subnet_base: int = 100
    classes: tuple[str, ...] = CLASSES
    grace: float = 5.0
    well_known_ports: bool | None = None  # None: when running as root
    #: When a class's clients begin, as a fraction of ``duration`` (default 0): new
    #: behaviour appearing mid-run is what a monitor must notice.
    starts: tuple[tuple[str, float], ...] = (("icmp", 0.15), ("scan", 0.3), ("cbr", 0.45))

    def start_of(self, name: str) -> float:
        """Seconds after the start at which class ``name`` begins."""
        return dict(self.starts).get(name, 0.0) * self.duration

    def subnet(self, name: str) -> str:
        """``"127.0.N"`` prefix of a class's /24."""
        return f"127.0.{self.subnet_base + 1 + CLASSES.index(name)}"

    def bpf(self) -> str:
        """A capture filter matching exactly this plan's subnets."""
        return " or ".join(f"net {self.subnet(c)}.0/24" for c in self.classes)


def class_of(addr: str, subnet_base: int = 100) -> str | None:
    """True behaviour class of a flow endpoint address, or None if it is not ours."""
    parts = addr.split(".")
    if len(parts) != 4 or parts[0] != "127" or parts[1] != "0":
        return None
    i = int(parts[2]) - subnet_base - 1
    return CLASSES[i] if 0 <= i < len(CLASSES) else None


@dataclass
class TrafficStats:
    """What the generators did: per class counts of flows started and failures."""

    started: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    ports: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
