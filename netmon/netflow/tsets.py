"""NetFlow v9 / IPFIX template sets -> template operations, and the per-datagram work caps.

Pure module (stdlib and numpy only), used by :mod:`netmon.netflow.decoder` on whichever
thread owns the decoder (the reactor thread in netmon); a :class:`TemplateCache` belongs
to one decoder.

Datagrams come from unauthenticated UDP senders, so what one datagram may cost is
capped (:class:`Limits`): every step whose cost grows with what the sender chose rather
than with the bytes it sent at a normal decoder's rate (a set, a template record, a
template field parsed, a template compiled, a template's records turned into columns, a
field of a variable-length record walked) is charged to the datagram's
:class:`Budget`, and the step that would pass a cap raises :class:`Shed` instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields

from netmon.netflow.templates import Malformed, Shed, Template, compile_template

__all__ = ["Budget", "Limits", "Shed", "TemplateCache", "TemplateOp", "parse_template_set"]

#: What a template set says: ("def", id, template), ("withdraw", id, None) or
#: ("withdraw all", options?, None).
TemplateOp = tuple[str, int, Template | None]
#: Compiles a template's (ie, pen, length) fields, charging the budget.
Compile = Callable[[list[tuple[int, int, int]], bool, "Budget"], Template]


@dataclass(frozen=True, slots=True)
class Limits:
    """Most work one datagram may cause. Real exporters stay far below each cap
    (softflowd: 2 sets, 2 templates of 10-20 fields, 1-2 templates with data per
    datagram; routers a few dozen templates at most); ``python -m netmon.bench fuzz
    --collector-shapes`` shows the worst each cap lets through."""

    sets: int = 64  #: sets (flowsets) of any kind, and held sets decoded
    template_records: int = 128  #: template definitions and withdrawals applied
    template_fields: int = 2048  #: field specifiers parsed (template sets not cached)
    compiles: int = 16  #: templates compiled (field lists not seen before)
    decodes: int = 6  #: templates whose records become columns (each ~30-40 us)
    #: records decoded, held ones included (4-byte records would cost 10x per byte
    #: what 46-byte ones do; a 65,507-byte datagram of 46-byte records has 1,420)
    records: int = 1536
    var_fields: int = 512  #: fields of variable-length records walked (~0.5 us each)


@dataclass(slots=True)
class Budget:
    """What is left of :class:`Limits` for the datagram being decoded."""

    sets: int
    template_records: int
    template_fields: int
    compiles: int
    decodes: int
    records: int
    var_fields: int

    @classmethod
    def of(cls, limits: Limits) -> Budget:
        return cls(limits.sets, limits.template_records, limits.template_fields,
                   limits.compiles, limits.decodes, limits.records, limits.var_fields)

    def take(self, cap: str, n: int = 1) -> None:
        """Charge ``n`` to ``cap``, or raise Shed(cap) when fewer than ``n`` are left."""
        left = getattr(self, cap) - n
        if left < 0:
            raise Shed(cap)
        setattr(self, cap, left)


class TemplateCache:
    """Template sets already parsed (exporters resend the same bytes) and templates
    already compiled (keyed by their fields, whatever their ID): resent templates cost
    a dictionary lookup, not a parse, and are not charged to the budget's parse caps."""

    SETS = 512  #: distinct template sets remembered
    COMPILED = 1024  #: distinct field lists remembered

    def __init__(self) -> None:
        self._sets: dict[tuple[int, int, bytes], list[TemplateOp] | str] = {}
        self._compiled: dict[tuple[bool, tuple], Template] = {}

    def ops(self, version: int, set_id: int, body: bytes, budget: Budget
            ) -> tuple[list[TemplateOp], str | None]:
        """The operations of one template set, and the cap that cut it short (None: the
        whole set); raises Malformed."""
        key = (version, set_id, body)
        ops = self._sets.get(key)
        if ops is None:
            cut: list[str] = []
            try:
                ops = parse_template_set(version, set_id, body, budget, self.compile, cut)
            except Malformed as bad:
                ops = bad.args[0]
            if cut:  # a set cut short is not remembered (the next budget may take it all)
                assert not isinstance(ops, str)
                return ops, cut[0]
            if len(self._sets) >= self.SETS:
                self._sets.clear()
            self._sets[key] = ops
        if isinstance(ops, str):
            raise Malformed(ops)
        if len(ops) > budget.template_records:
            ops = ops[:budget.template_records]
            budget.template_records = 0
            return ops, "template_records"
        budget.template_records -= len(ops)
        return ops, None

    def compile(self, fields_: list[tuple[int, int, int]], options: bool,
                budget: Budget) -> Template:
        key = (options, tuple(fields_))
        tpl = self._compiled.get(key)
        if tpl is None:
            budget.take("compiles")
            tpl = compile_template(fields_, options)
            if len(self._compiled) >= self.COMPILED:
                self._compiled.clear()
            self._compiled[key] = tpl
        return tpl


def _template_fields(body: bytes, off: int, count: int, ipfix: bool
                     ) -> tuple[list[tuple[int, int, int]], int]:
    """``count`` field specifiers at ``off``: [(ie, pen, length)] and the offset after."""
    out = []
    end = len(body)
    for _ in range(count):
        if off + 4 > end:
            raise Malformed("template overrun")
        ie, ln = struct.unpack_from("!HH", body, off)
        off += 4
        pen = 0
        if ipfix and ie & 0x8000:  # enterprise bit: a 4-byte enterprise number follows
            if off + 4 > end:
                raise Malformed("template overrun")
            pen = struct.unpack_from("!I", body, off)[0]
            ie &= 0x7FFF
            off += 4
        if ln == 0:
            raise Malformed("zero-length field")
        out.append((ie, pen, ln))
    return out, off


def _compile(fields_: list[tuple[int, int, int]], options: bool, budget: Budget) -> Template:
    return compile_template(fields_, options)


def parse_template_set(version: int, set_id: int, body: bytes, budget: Budget | None = None,
                       compile_: Compile | None = None, cut: list[str] | None = None
                       ) -> list[TemplateOp]:
    """The template records of one (options) template set or flowset. With a budget,
    stops at the record that would pass its template record, field or compile caps,
    returning those before it and appending the cap's name to ``cut``;
    ``compile_(fields, options, budget)`` compiles (default: uncached)."""
    try:
        return _parse_set(version, set_id, body, budget, compile_ or _compile, cut)
    except _Cut as stop:
        if cut is None:
            raise Shed(stop.args[1]) from None
        cut.append(stop.args[1])
        return stop.args[0]


class _Cut(Exception):
    """Internal: (ops parsed so far, cap name)."""


def _parse_set(version: int, set_id: int, body: bytes, budget: Budget | None,
               make: Compile, cut: list[str] | None) -> list[TemplateOp]:
    ipfix = version == 10
    options = set_id in (1, 3)
    head = 6 if set_id == 1 else 4  # v9 options: id, scope length, option length
    budget = budget or Budget.of(Limits(*[1 << 30] * len(fields(Limits))))
    ops: list[TemplateOp] = []
    off, end = 0, len(body)
    while end - off >= head:  # fewer bytes than a record header: padding
        if len(ops) >= budget.template_records:  # withdrawals are 4 bytes: cap the loop
            raise _Cut(ops, "template_records")
        tid, count = struct.unpack_from("!HH", body, off)
        if tid == 0:  # template ID 0 is never valid: zero padding
            break
        if ipfix and count == 0:  # withdrawal (RFC 7011 8.1)
            if tid == set_id:
                ops.append(("withdraw all", int(options), None))
            elif tid >= 256:
                ops.append(("withdraw", tid, None))
            else:
                raise Malformed("bad template id")
            off += 4
            continue
        if tid < 256:
            raise Malformed("bad template id")
        if set_id == 1:  # v9 options template: scope and option lengths in bytes
            scope_len = count
            opt_len = struct.unpack_from("!H", body, off + 4)[0]
            if scope_len % 4 or opt_len % 4:
                raise Malformed("bad scope")
            count = (scope_len + opt_len) // 4
            off += 6
        elif set_id == 3:  # IPFIX options template: then the scope field count
            if off + 6 > end:
                raise Malformed("template overrun")
            if struct.unpack_from("!H", body, off + 4)[0] > count:
                raise Malformed("bad scope")
            off += 6
        else:
            off += 4
        if count == 0:
            raise Malformed("zero record length")
        if count > (end - off) // 4:  # each field specifier takes 4 bytes at least
            raise Malformed("template overrun")
        if count > budget.template_fields:  # before the parse: that is the cost
            raise _Cut(ops, "template_fields")
        fields_, off = _template_fields(body, off, count, ipfix)
        budget.template_fields -= count
        try:
            ops.append(("def", tid, make(fields_, options, budget)))
        except Shed as cap:
            raise _Cut(ops, cap.args[0]) from None
    return ops
