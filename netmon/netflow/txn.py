"""One NetFlow v9 / IPFIX datagram's staged changes (:class:`Txn`), applied by
:mod:`netmon.netflow.decoder` only once the whole datagram has parsed.

Pure module (stdlib and numpy only), used on whichever thread owns the decoder (the
reactor thread in netmon).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netmon.netflow.templates import Ctx, FlowRecords, Template, build_records
from netmon.netflow.tsets import Budget

__all__ = ["Group", "Pending", "Txn"]


@dataclass(slots=True)
class Pending:
    """A data set held until its template comes (or ``unknown_hold`` passes)."""

    key: tuple[str, int, int, int]
    at: float
    body: bytes
    ctx: Ctx
    alive: bool = True


@dataclass(slots=True)
class Group:
    """Records of one template (and one kind of time context) met in one datagram: its
    sets and held sets become columns together, in one ``build_records`` (~40 us
    whatever the count), so many small sets cost what one large one does."""

    tpl: Template
    parts: list[tuple[bytes, int, int, Ctx]] = field(default_factory=list)  # buf, b0, n, ctx


@dataclass(slots=True)
class Txn:
    """Changes one datagram makes, applied only when all of it has parsed."""

    budget: Budget
    templates: dict[tuple[str, int, int, int], Template | None] = field(default_factory=dict)
    #: keys of ``templates`` holding a template, by options or not (for withdraw-all)
    live: tuple[set, set] = field(default_factory=lambda: (set(), set()))
    cleared: set[tuple[str, int, int, bool]] = field(default_factory=set)
    #: held sets decoded, per template key: the first so many of its held list
    consumed: dict[tuple[str, int, int, int], int] = field(default_factory=dict)
    pending: dict[tuple[str, int, int, int], list[Pending]] = field(default_factory=dict)
    groups: dict[tuple[int, bool], Group] = field(default_factory=dict)
    late_bad: list[str] = field(default_factory=list)
    withdrawn: int = 0
    skipped: int = 0
    nrec: int = 0  # data records of this datagram (IPFIX sequence numbers count them)
    data_sets: int = 0
    unknown_sets: int = 0  # still waiting at the end: the record count is then unknown
    init_ms: int | None = None  # systemInitTimeMilliseconds from options data, if sent
    cut: str | None = None  # the cap that cut the datagram short (see Limits)

    def build(self) -> FlowRecords:
        """The records of every group of the datagram, as one FlowRecords."""
        out = []
        for g in self.groups.values():
            dtype = g.tpl.dtype
            assert dtype is not None
            if len(g.parts) == 1:
                buf, b0, n, ctx = g.parts[0]
                rec = np.frombuffer(buf, dtype, n, b0)
            else:
                size = dtype.itemsize
                raw = b"".join(buf[b0:b0 + n * size] for buf, b0, n, _ in g.parts)
                rec = np.frombuffer(raw, dtype)
                ctx = _joint_ctx([c for *_, c in g.parts], [n for _, _, n, _ in g.parts])
            out.append(build_records(rec, g.tpl.roles, ctx))
        return FlowRecords.concat(out)


def _joint_ctx(ctxs: list[Ctx], counts: list[int]) -> Ctx:
    """One Ctx for records of several sets, in order (``counts`` records each): the
    shared one, or per-record arrays when the sets came in different datagrams."""
    first = ctxs[0]
    if all(c == first for c in ctxs):
        return first

    def per_record(values: list) -> np.ndarray:
        return np.repeat(np.asarray(values), counts)
    return Ctx(per_record([c.export for c in ctxs]),
               None if first.uptime is None else per_record([c.uptime for c in ctxs]),
               None if first.init_ms is None else per_record([c.init_ms for c in ctxs]))
