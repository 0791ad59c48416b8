"""NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagrams -> columns of flows.

Pure module (stdlib and numpy only). It runs on the reactor thread in netmon, inside the
flow-export collector (:mod:`netmon.sources.collector`), which is the decoder's one
owner; nothing here is locked, so no other thread may touch a :class:`NetflowDecoder`.
What it hands out (:class:`FlowRecords`) is immutable by convention and may cross threads.

How, and why:
- Speed comes from numpy: a v5 datagram is one ``np.frombuffer`` with a big-endian
  structured dtype, and every v9/IPFIX template whose fields all have fixed lengths is
  compiled once into a structured dtype that picks just the fields netmon reads, so a
  whole data set is one ``np.frombuffer`` too. Columns are then built vectorised.
  Templates with variable-length fields take a per-record Python walk that copies the
  fields read into the same kind of fixed layout, then share the vectorised path.
- A datagram is all or nothing: its template changes, buffered sets and sequence
  numbers are staged in a :class:`_Txn` and applied only once the whole datagram has
  parsed, so a malformed tail cannot leave half of a datagram behind.
- Data sets for templates not seen yet are held (bounded, for ``unknown_hold`` seconds)
  and decoded when their template arrives: exporters send templates only now and then.

One module on purpose: the three versions share the template compiler, the column
builder and the time conversions.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

#: Field length meaning "variable length" in a template (IPFIX; tolerated in v9 too).
VARLEN = 65535
#: Private enterprise number of RFC 5103 reverse (biflow) information elements.
REVERSE_PEN = 29305
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
#: NetFlow v5: header and record sizes, and the most records one datagram may carry.
V5_HEADER, V5_RECORD, V5_MAX_COUNT = 24, 48, 30

_U32 = 0xFFFFFFFF
_HALF = 1 << 31

#: (enterprise number, information element) -> the role netmon reads it as. v9 shares the
#: numbers of enterprise 0; reverse IEs carry the forward IE number under PEN 29305.
_IE_ROLES: dict[tuple[int, int], str] = {
    (0, 1): "octets", (0, 2): "packets", (0, 85): "octets_total", (0, 86): "packets_total",
    (REVERSE_PEN, 1): "roctets", (REVERSE_PEN, 2): "rpackets",
    (REVERSE_PEN, 85): "roctets_total", (REVERSE_PEN, 86): "rpackets_total",
    (0, 4): "proto", (0, 6): "flags", (0, 7): "sport", (0, 11): "dport",
    (0, 8): "src4", (0, 12): "dst4", (0, 27): "src6", (0, 28): "dst6",
    (0, 22): "up_start", (0, 21): "up_end", (0, 150): "s_start", (0, 151): "s_end",
    (0, 152): "ms_start", (0, 153): "ms_end", (0, 154): "ntp_start", (0, 155): "ntp_end",
    (0, 156): "ntp_start", (0, 157): "ntp_end", (0, 158): "dus_start", (0, 159): "dus_end",
    (0, 160): "init_ms",
}
#: Roles whose field is a byte string of exactly this length; every other role is an
#: unsigned integer of 1..8 bytes (reduced-size encoding, RFC 7011 6.2).
_ADDR_WIDTH = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}
_NTP_ROLES = frozenset({"ntp_start", "ntp_end"})

#: Protocols with ports (TCP, UDP, DCCP, SCTP, UDP-Lite): other protocols get port 0, as
#: in the flow table, whatever the exporter put there (v5 puts ICMP type/code in dport).
_HAS_PORTS = np.zeros(256, dtype=bool)
_HAS_PORTS[[6, 17, 33, 132, 136]] = True
#: Bit shifts that assemble big-endian integers of 1..8 bytes from uint8 columns.
_SHIFTS = {w: np.array([8 * (w - 1 - k) for k in range(w)], dtype=np.uint64)
           for w in range(1, 9)}

#: NetFlow v5 record fields netmon reads, named by role (the rest is skipped).
_V5_DTYPE = np.dtype({
    "names": ["src4", "dst4", "packets", "octets", "up_start", "up_end", "sport", "dport",
              "flags", "proto"],
    "formats": [("u1", (4,)), ("u1", (4,)), ">u4", ">u4", ">u4", ">u4", ">u2", ">u2",
                "u1", "u1"],
    "offsets": [0, 4, 16, 20, 24, 28, 32, 34, 37, 38], "itemsize": V5_RECORD})
_V5_ROLES = frozenset(_V5_DTYPE.names or ())

_COLUMNS = ("start", "end", "proto", "fam", "src", "dst", "sport", "dport", "packets",
            "octets", "rpackets", "roctets", "tcp_flags")


@dataclass(frozen=True, slots=True)
class FlowRecords:
    """Decoded flow records as numpy columns (row i = record i). Each record is one
    direction src->dst."""

    start: np.ndarray  #: float64 epoch seconds of the flow's first packet
    end: np.ndarray  #: float64 epoch seconds of its last packet
    proto: np.ndarray  #: int64 IP protocol
    fam: np.ndarray  #: int64, 4 or 6
    src: np.ndarray  #: uint8 (n, 16): IPv4 in the last 4 bytes (first 12 zero), IPv6 all 16
    dst: np.ndarray  #: uint8 (n, 16)
    sport: np.ndarray  #: int64 (0 when the protocol has no ports)
    dport: np.ndarray  #: int64
    packets: np.ndarray  #: int64 packets src->dst
    octets: np.ndarray  #: int64 bytes src->dst (IP bytes as the exporter counts them)
    rpackets: np.ndarray  #: int64 reverse packets (RFC 5103 biflow, PEN 29305); else 0
    roctets: np.ndarray  #: int64 reverse bytes
    tcp_flags: np.ndarray  #: int64 OR of TCP flags seen (0 when not TCP or unknown)

    def __len__(self) -> int:
        return len(self.start)

    @staticmethod
    def empty() -> FlowRecords:
        """No records (columns of length 0 with the right types)."""
        ints = [np.zeros(0, dtype=np.int64) for _ in range(9)]
        return FlowRecords(np.zeros(0), np.zeros(0), ints[0], ints[1],
                           np.zeros((0, 16), dtype=np.uint8), np.zeros((0, 16), dtype=np.uint8),
                           *ints[2:])

    @staticmethod
    def concat(parts: list[FlowRecords]) -> FlowRecords:
        """The records of ``parts`` one after the other."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return FlowRecords.empty()
        if len(parts) == 1:
            return parts[0]
        return FlowRecords(*[np.concatenate([getattr(p, c) for p in parts]) for c in _COLUMNS])


class _Malformed(Exception):
    """A datagram that breaks its format; ``args[0]`` is the reason counted."""


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What a data set's times are relative to: the export time of its datagram and,
    for v5/v9, the exporter's uptime (ms) at that time."""

    export: float
    uptime: int | None
    #: IPFIX: the exporter's systemInitTimeMilliseconds (IE 160) as sent in options
    #: data (softflowd does), for records that give times as uptime offsets only.
    init_ms: int | None = None


@dataclass(frozen=True, slots=True)
class _Template:
    """A compiled template. ``dtype`` lays out, by role, the fields netmon reads: straight
    over the data set for fixed-length templates, over the normalised copy ``_walk``
    makes for variable-length ones. ``dtype`` is None when the data is not decoded
    (options templates; templates without addresses)."""

    lengths: tuple[int, ...]  # field lengths in order (VARLEN for variable)
    options: bool
    minlen: int  # the record length, or its minimum when variable (1 byte per var field)
    variable: bool
    roles: frozenset[str]
    dtype: np.dtype | None
    picks: dict[int, tuple[str, int]]  # variable path: field index -> (role, width)
    init_at: int = -1  # options: offset of systemInitTimeMilliseconds (8 bytes), or -1


@dataclass(slots=True)
class _Pending:
    """A data set held until its template comes (or ``unknown_hold`` passes)."""

    key: tuple[str, int, int, int]
    at: float
    body: bytes
    ctx: _Ctx
    alive: bool = True


@dataclass(slots=True)
class _Txn:
    """Changes one datagram makes, applied only when all of it has parsed."""

    templates: dict[tuple[str, int, int, int], _Template | None] = field(default_factory=dict)
    cleared: set[tuple[str, int, int, bool]] = field(default_factory=set)
    consumed: set[tuple[str, int, int, int]] = field(default_factory=set)
    pending: list[_Pending] = field(default_factory=list)
    out: list[FlowRecords] = field(default_factory=list)
    late_bad: list[str] = field(default_factory=list)
    withdrawn: int = 0
    skipped: int = 0
    nrec: int = 0  # data records of this datagram (IPFIX sequence numbers count them)
    data_sets: int = 0
    unknown_sets: int = 0  # still waiting at the end: the record count is then unknown
    init_ms: int | None = None  # systemInitTimeMilliseconds from options data, if sent


def _field_role(ie: int, pen: int, length: int) -> tuple[str, int] | None:
    """The role a template field plays and its width, or None when netmon skips it
    (unknown IE, or a length the IE cannot have)."""
    role = _IE_ROLES.get((pen, ie))
    if role is None:
        return None
    want = _ADDR_WIDTH.get(role)
    if want is not None:
        return (role, want) if length in (want, VARLEN) else None
    if role in _NTP_ROLES:
        return (role, 8) if length in (8, VARLEN) else None
    return (role, length) if 1 <= length <= 8 or length == VARLEN else None


def _compile(fields: list[tuple[int, int, int]], options: bool) -> _Template:
    """Compile a template's (ie, pen, length) fields."""
    lengths = tuple(ln for _, _, ln in fields)
    variable = VARLEN in lengths
    minlen = sum(1 if ln == VARLEN else ln for ln in lengths)
    picks: dict[int, tuple[str, int]] = {}
    if not options:
        seen: set[str] = set()
        for i, (ie, pen, ln) in enumerate(fields):
            rp = _field_role(ie, pen, ln)
            if rp is not None and rp[0] not in seen:  # a repeated IE: the first one counts
                seen.add(rp[0])
                picks[i] = rp
    roles = frozenset(r for r, _ in picks.values())
    has_addr = any(r in _ADDR_WIDTH for r in roles)
    dtype = None
    if has_addr:
        names, formats, offsets = [], [], []
        at = pos = 0
        for i, ln in enumerate(lengths):
            if i in picks:
                role, width = picks[i]
                if variable:  # _walk writes integers as 8 bytes, addresses as they are
                    width = _ADDR_WIDTH.get(role, 8)
                names.append(role)
                formats.append(f">u{width}" if width in (1, 2, 4, 8) and role not in
                               _ADDR_WIDTH else ("u1", (width,)))
                offsets.append(pos if variable else at)
                pos += width
            at += 1 if ln == VARLEN else ln
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                          "itemsize": pos if variable else minlen})
    init_at = -1
    if options and not variable:
        at = 0
        for ie, pen, ln in fields:
            if (pen, ie) == (0, 160) and ln == 8:
                init_at = at
                break
            at += ln
    return _Template(lengths, options, minlen, variable, roles, dtype, picks, init_at)


def _walk(tpl: _Template, data: bytes, b0: int, b1: int) -> tuple[int, bytes]:
    """Walk the variable-length records of ``data[b0:b1]``: their number, and the fields
    netmon reads copied into the fixed layout of ``tpl.dtype`` (integers as 8 bytes)."""
    out = bytearray()
    lengths, picks, minlen = tpl.lengths, tpl.picks, tpl.minlen
    n, off = 0, b0
    while b1 - off >= minlen:  # fewer bytes than the shortest record: padding
        for i, ln in enumerate(lengths):
            if ln == VARLEN:
                if off >= b1:
                    raise _Malformed("varlen overrun")
                ln = data[off]
                off += 1
                if ln == 255:  # RFC 7011 7: 255, then the length in two bytes
                    if off + 2 > b1:
                        raise _Malformed("varlen overrun")
                    ln = (data[off] << 8) | data[off + 1]
                    off += 2
            if off + ln > b1:
                raise _Malformed("varlen overrun")
            pick = picks.get(i)
            if pick is not None:
                role, width = pick
                value = data[off:off + ln]
                if role in _ADDR_WIDTH:
                    width = _ADDR_WIDTH[role]
                    out += value if ln == width else bytes(width)
                else:
                    out += value.rjust(8, b"\0") if 1 <= ln <= 8 else bytes(8)
            off += ln
        n += 1
    return n, bytes(out)


def _col(rec: np.ndarray, role: str) -> np.ndarray:
    """An unsigned integer column (odd widths arrive as uint8 rows: assemble them)."""
    a = rec[role]
    if a.ndim == 2:
        a = (a.astype(np.uint64) << _SHIFTS[a.shape[1]]).sum(axis=1, dtype=np.uint64)
    return a


def _time(rec: np.ndarray, roles: frozenset[str], ctx: _Ctx, which: str) -> np.ndarray | None:
    """Epoch seconds of the flows' start (``which`` "start") or end, from the most precise
    time field present, or None when there is none."""
    role = "ms_" + which
    if role in roles:
        return _col(rec, role).astype(np.float64) / 1e3
    role = "ntp_" + which
    if role in roles:  # NTP format: seconds since 1900, then a 32-bit fraction
        v = _col(rec, role)
        secs = (v >> np.uint64(32)).astype(np.float64) - NTP_UNIX_OFFSET
        return secs + (v & np.uint64(_U32)).astype(np.float64) / 2.0 ** 32
    role = "s_" + which
    if role in roles:
        return _col(rec, role).astype(np.float64)
    role = "dus_" + which
    if role in roles:  # microseconds before the export time
        return ctx.export - _col(rec, role).astype(np.float64) / 1e6
    role = "up_" + which
    if role not in roles:
        return None
    x = _col(rec, role)
    if "init_ms" in roles:  # IPFIX: ms since systemInitTimeMilliseconds
        return (_col(rec, "init_ms") + x).astype(np.float64) / 1e3
    if ctx.init_ms is not None and ctx.uptime is None:  # ... given in options data
        return (x.astype(np.float64) + ctx.init_ms) / 1e3
    if ctx.uptime is not None:  # v5/v9: ms of sysUptime, the header gives "now" in it
        ref = np.uint32(ctx.uptime)
    else:  # IPFIX without an init time: take the flows as ending at the export time
        ref = _col(rec, "up_end" if "up_end" in roles else "up_start").astype(np.uint32)
    # int32 of the uint32 difference: survives the uptime counter wrapping (49.7 days)
    back = (ref - x.astype(np.uint32)).astype(np.int32)
    return ctx.export - back.astype(np.float64) / 1e3


def _ints(rec: np.ndarray, roles: frozenset[str], *names: str) -> np.ndarray:
    """The first of ``names`` present, as int64, else zeros."""
    for name in names:
        if name in roles:
            return _col(rec, name).astype(np.int64)
    return np.zeros(len(rec), dtype=np.int64)


def _build(rec: np.ndarray, roles: frozenset[str], ctx: _Ctx) -> FlowRecords:
    """FlowRecords from a structured array whose fields are named by role."""
    n = len(rec)
    proto = _ints(rec, roles, "proto")
    ports = _HAS_PORTS[np.clip(proto, 0, 255)]
    src = np.zeros((n, 16), dtype=np.uint8)
    dst = np.zeros((n, 16), dtype=np.uint8)
    has4 = "src4" in roles or "dst4" in roles
    has6 = "src6" in roles or "dst6" in roles
    if has4:
        if "src4" in roles:
            src[:, 12:] = rec["src4"]
        if "dst4" in roles:
            dst[:, 12:] = rec["dst4"]
        fam = np.full(n, 4, dtype=np.int64)
        if has6:  # both kinds in one template: a record uses the one that is not zero
            use6 = ~(src[:, 12:].any(axis=1) | dst[:, 12:].any(axis=1))
            for role, col in (("src6", src), ("dst6", dst)):
                if role in roles:
                    col[use6] = rec[role][use6]
            fam[use6] = 6
    else:
        if "src6" in roles:
            src[:] = rec["src6"]
        if "dst6" in roles:
            dst[:] = rec["dst6"]
        fam = np.full(n, 6, dtype=np.int64)
    start = _time(rec, roles, ctx, "start")
    end = _time(rec, roles, ctx, "end")
    if start is None and end is None:
        start = np.full(n, ctx.export)
        end = start.copy()
    elif start is None:
        start = end.copy()
    elif end is None:
        end = start.copy()
    return FlowRecords(
        start=start, end=end, proto=proto, fam=fam, src=src, dst=dst,
        sport=_ints(rec, roles, "sport") * ports,
        dport=_ints(rec, roles, "dport") * ports,
        packets=_ints(rec, roles, "packets", "packets_total"),
        octets=_ints(rec, roles, "octets", "octets_total"),
        rpackets=_ints(rec, roles, "rpackets", "rpackets_total"),
        roctets=_ints(rec, roles, "roctets", "roctets_total"),
        tcp_flags=_ints(rec, roles, "flags") * (proto == 6))


def _template_fields(body: bytes, off: int, count: int, ipfix: bool
                     ) -> tuple[list[tuple[int, int, int]], int]:
    """``count`` field specifiers at ``off``: [(ie, pen, length)] and the offset after."""
    out = []
    end = len(body)
    for _ in range(count):
        if off + 4 > end:
            raise _Malformed("template overrun")
        ie, ln = struct.unpack_from("!HH", body, off)
        off += 4
        pen = 0
        if ipfix and ie & 0x8000:  # enterprise bit: a 4-byte enterprise number follows
            if off + 4 > end:
                raise _Malformed("template overrun")
            pen = struct.unpack_from("!I", body, off)[0]
            ie &= 0x7FFF
            off += 4
        if ln == 0:
            raise _Malformed("zero-length field")
        out.append((ie, pen, ln))
    return out, off


#: What a template set says: ("def", id, template), ("withdraw", id, None) or
#: ("withdraw all", options?, None).
_TemplateOp = tuple[str, int, _Template | None]


def _parse_template_set(version: int, set_id: int, body: bytes) -> list[_TemplateOp]:
    """The template records of one (options) template set or flowset."""
    ipfix = version == 10
    options = set_id in (1, 3)
    head = 6 if set_id == 1 else 4  # v9 options: id, scope length, option length
    ops: list[_TemplateOp] = []
    off, end = 0, len(body)
    while end - off >= head:  # fewer bytes than a record header: padding
        tid, count = struct.unpack_from("!HH", body, off)
        if tid == 0:  # template ID 0 is never valid: zero padding
            break
        if ipfix and count == 0:  # withdrawal (RFC 7011 8.1)
            if tid == set_id:
                ops.append(("withdraw all", int(options), None))
            elif tid >= 256:
                ops.append(("withdraw", tid, None))
            else:
                raise _Malformed("bad template id")
            off += 4
            continue
        if tid < 256:
            raise _Malformed("bad template id")
        if set_id == 1:  # v9 options template: scope and option lengths in bytes
            scope_len = count
            opt_len = struct.unpack_from("!H", body, off + 4)[0]
            if scope_len % 4 or opt_len % 4:
                raise _Malformed("bad scope")
            count = (scope_len + opt_len) // 4
            off += 6
        elif set_id == 3:  # IPFIX options template: then the scope field count
            if off + 6 > end:
                raise _Malformed("template overrun")
            if struct.unpack_from("!H", body, off + 4)[0] > count:
                raise _Malformed("bad scope")
            off += 6
        else:
            off += 4
        if count == 0:
            raise _Malformed("zero record length")
        fields, off = _template_fields(body, off, count, ipfix)
        ops.append(("def", tid, _compile(fields, options)))
    return ops


class NetflowDecoder:
    """Decodes NetFlow v5/v9 and IPFIX datagrams, keeping templates, buffered data sets
    and sequence numbers per exporter and observation domain. Counters are plain
    attributes the owner reads."""

    #: Distinct template sets remembered parsed (exporters resend the same bytes).
    TEMPLATE_CACHE = 512

    def __init__(self, *, unknown_hold: float = 10.0, unknown_max: int = 1000) -> None:
        self.unknown_hold = unknown_hold
        self.unknown_max = unknown_max
        self.datagrams = 0  #: datagrams received, malformed ones included
        self.records = 0  #: flow records returned
        self.malformed = 0  #: datagrams dropped as malformed (and buffered sets, see decode)
        self.malformed_reasons: dict[str, int] = {}
        self.unknown_dropped = 0  #: data sets dropped: their template never came
        self.template_withdrawn = 0  #: IPFIX withdrawal records (withdraw-all counts once)
        self.skipped_records = 0  #: records with neither IPv4 nor IPv6 addresses
        self.lost = 0  #: records (v9: datagrams) missing by sequence numbers
        self.by_version: dict[int, int] = {}  #: datagrams per version (5, 9, 10)
        self._templates: dict[tuple[str, int, int, int], _Template] = {}
        self._seq: dict[tuple[str, int, int], tuple[int, int]] = {}  # (last seq, its count)
        self._inclusive: set[tuple[str, int, int]] = set()  # see _sequence
        self._init_ms: dict[tuple[str, int], int] = {}  # IPFIX (exporter, domain) -> IE 160
        self._pending: dict[tuple[str, int, int, int], list[_Pending]] = {}
        self._order: deque[_Pending] = deque()
        self._npending = 0
        self._set_cache: dict[tuple[int, int, bytes], list[_TemplateOp] | str] = {}

    @property
    def templates(self) -> int:
        """Templates known now (all exporters and domains)."""
        return len(self._templates)

    @property
    def unknown_buffered(self) -> int:
        """Data sets held now for templates not seen yet."""
        return self._npending

    # ---------------------------------------------------------------- entry points
    def decode(self, data: bytes, exporter: str, now: float) -> list[tuple[int, FlowRecords]]:
        """Decode one datagram from ``exporter`` (address text) received at ``now`` (epoch s).

        Returns (domain, records) pairs: domain is the v9 source ID / IPFIX observation
        domain ID / for v5 (engine_type << 8 | engine_id). May also return records of data
        sets buffered earlier for a template that this datagram defined. Never raises on
        bad input: a malformed datagram is counted in ``malformed`` and dropped whole
        (records already decoded from a datagram that turns out malformed later are also
        dropped — a datagram is all or nothing). A buffered set that turns out malformed
        once its template comes is dropped alone and counted in ``malformed`` too.
        """
        self.datagrams += 1
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            if len(data) < 2:
                raise _Malformed("too short")
            version = (data[0] << 8) | data[1]
            if version not in (5, 9, 10):
                raise _Malformed("unknown version")
            self.by_version[version] = self.by_version.get(version, 0) + 1
            if version == 5:
                return self._decode_v5(data, exporter)
            return self._decode_sets(data, exporter, now, version)
        except _Malformed as bad:
            self._count_malformed(bad.args[0])
            return []

    def expire(self, now: float) -> None:
        """Drop buffered data sets older than unknown_hold seconds, counting their sets
        in unknown_dropped."""
        limit = now - self.unknown_hold
        order = self._order
        while order and (not order[0].alive or order[0].at < limit):
            p = order.popleft()
            if p.alive:
                self._drop_pending(p)

    # ---------------------------------------------------------------- versions
    def _decode_v5(self, data: bytes, exporter: str) -> list[tuple[int, FlowRecords]]:
        if len(data) < V5_HEADER:
            raise _Malformed("too short")
        count, uptime, secs, nsecs, seq, etype, eid = struct.unpack_from("!HIIIIBB", data, 2)
        if count > V5_MAX_COUNT or len(data) != V5_HEADER + V5_RECORD * count:
            raise _Malformed("v5 count")
        domain = etype << 8 | eid
        self._sequence((exporter, 5, domain), seq, count)
        if not count:
            return []
        rec = np.frombuffer(data, _V5_DTYPE, count, V5_HEADER)
        records = _build(rec, _V5_ROLES, _Ctx(secs + nsecs / 1e9, uptime))
        self.records += count
        return [(domain, records)]

    def _decode_sets(self, data: bytes, exporter: str, now: float, version: int
                     ) -> list[tuple[int, FlowRecords]]:
        """v9 and IPFIX: a header, then sets (flowsets) of templates or data."""
        if version == 9:
            if len(data) < 20:
                raise _Malformed("too short")
            uptime, secs, seq, domain = struct.unpack_from("!IIII", data, 4)
            ctx, off, tset, oset = _Ctx(float(secs), uptime), 20, 0, 1
        else:
            if len(data) < 16:
                raise _Malformed("too short")
            length, secs, seq, domain = struct.unpack_from("!HIII", data, 2)
            if length != len(data):
                raise _Malformed("bad length")
            ctx, off, tset, oset = _Ctx(float(secs), None,
                                        self._init_ms.get((exporter, domain))), 16, 2, 3
        txn = _Txn()
        end = len(data)
        while end - off >= 4:  # a v9 datagram may end in a few bytes of padding
            set_id, set_len = struct.unpack_from("!HH", data, off)
            if set_len < 4 or off + set_len > end:
                raise _Malformed("bad set length")
            if set_id == tset or set_id == oset:
                ops = self._template_ops(version, set_id, data[off + 4:off + set_len])
                self._apply_templates(txn, ops, exporter, version, domain)
            elif set_id >= 256:
                txn.data_sets += 1
                key = (exporter, version, domain, set_id)
                tpl = self._lookup(txn, key)
                if tpl is None:
                    txn.pending.append(_Pending(key, now, data[off + 4:off + set_len], ctx))
                    txn.unknown_sets += 1
                else:
                    txn.nrec += self._data_set(txn, tpl, data, off + 4, off + set_len, ctx)
            off += set_len  # set IDs 4..255 (v9: 2..255) are reserved: skipped
        self._commit(txn)
        if txn.init_ms is not None and version == 10:
            self._init_ms[(exporter, domain)] = txn.init_ms
        if version == 9:
            self._sequence((exporter, 9, domain), seq, 1)  # v9 counts export packets
        elif txn.data_sets:  # template-only messages are not trusted to carry it
            self._sequence((exporter, 10, domain), seq,
                           None if txn.unknown_sets else txn.nrec)
        if not txn.out:
            return []
        records = FlowRecords.concat(txn.out)
        self.records += len(records)
        return [(domain, records)]

    # ---------------------------------------------------------------- templates
    def _template_ops(self, version: int, set_id: int, body: bytes) -> list[_TemplateOp]:
        key = (version, set_id, body)
        ops = self._set_cache.get(key)
        if ops is None:
            try:
                ops = _parse_template_set(version, set_id, body)
            except _Malformed as bad:
                ops = bad.args[0]
            if len(self._set_cache) >= self.TEMPLATE_CACHE:
                self._set_cache.clear()
            self._set_cache[key] = ops
        if isinstance(ops, str):
            raise _Malformed(ops)
        return ops

    def _lookup(self, txn: _Txn, key: tuple[str, int, int, int]) -> _Template | None:
        if key in txn.templates:
            return txn.templates[key]
        tpl = self._templates.get(key)
        if tpl is not None and (*key[:3], tpl.options) in txn.cleared:
            return None
        return tpl

    def _apply_templates(self, txn: _Txn, ops: list[_TemplateOp], exporter: str,
                         version: int, domain: int) -> None:
        for op, tid, tpl in ops:
            if op == "withdraw all":
                txn.withdrawn += 1
                options = bool(tid)
                txn.cleared.add((exporter, version, domain, options))
                for k, t in list(txn.templates.items()):
                    if k[:3] == (exporter, version, domain) and t is not None \
                            and t.options == options:
                        del txn.templates[k]
                continue
            key = (exporter, version, domain, tid)
            if op == "withdraw":
                txn.withdrawn += 1
                txn.templates[key] = None
                continue
            assert tpl is not None
            txn.templates[key] = tpl
            # Data that came before its template: this datagram's own first (a failure
            # there is this datagram's), then sets held from earlier datagrams.
            for p in [p for p in txn.pending if p.key == key]:
                txn.pending.remove(p)
                txn.unknown_sets -= 1
                txn.nrec += self._data_set(txn, tpl, p.body, 0, len(p.body), p.ctx)
            if key in self._pending and key not in txn.consumed:
                txn.consumed.add(key)
                for p in self._pending[key]:
                    try:
                        self._data_set(txn, tpl, p.body, 0, len(p.body), p.ctx)
                    except _Malformed as bad:
                        txn.late_bad.append(bad.args[0])

    def _data_set(self, txn: _Txn, tpl: _Template, data: bytes, b0: int, b1: int,
                  ctx: _Ctx) -> int:
        """Decode one data set into ``txn.out``; returns its number of records."""
        if tpl.variable:
            n, buf = _walk(tpl, data, b0, b1)
            b0 = 0
        else:
            n, buf = (b1 - b0) // tpl.minlen, data  # the remainder is padding
        if n == 0 or tpl.options:
            if n and tpl.init_at >= 0 and not tpl.variable:
                at = b0 + (n - 1) * tpl.minlen + tpl.init_at
                txn.init_ms = struct.unpack_from("!Q", data, at)[0]
            return n
        if txn.init_ms is not None and ctx.uptime is None and ctx.init_ms != txn.init_ms:
            ctx = replace(ctx, init_ms=txn.init_ms)
        if tpl.dtype is None:
            txn.skipped += n
            return n
        txn.out.append(_build(np.frombuffer(buf, tpl.dtype, n, b0), tpl.roles, ctx))
        return n

    # ---------------------------------------------------------------- state changes
    def _commit(self, txn: _Txn) -> None:
        for exporter, version, domain, options in txn.cleared:
            for k in [k for k, t in self._templates.items()
                      if k[:3] == (exporter, version, domain) and t.options == options]:
                del self._templates[k]
        for key, tpl in txn.templates.items():
            if tpl is None:
                self._templates.pop(key, None)
            else:
                self._templates[key] = tpl
        for key in txn.consumed:
            for p in self._pending.pop(key, ()):
                p.alive = False
                self._npending -= 1
        if txn.consumed and len(self._order) > 2 * self.unknown_max + 16:
            self._order = deque(p for p in self._order if p.alive)
        for p in txn.pending:
            self._pending.setdefault(p.key, []).append(p)
            self._order.append(p)
            self._npending += 1
        while self._npending > self.unknown_max:
            p = self._order.popleft()
            if p.alive:
                self._drop_pending(p)
        self.template_withdrawn += txn.withdrawn
        self.skipped_records += txn.skipped
        for reason in txn.late_bad:
            self._count_malformed(reason)

    def _drop_pending(self, p: _Pending) -> None:
        p.alive = False
        held = self._pending[p.key]
        held.remove(p)
        if not held:
            del self._pending[p.key]
        self._npending -= 1
        self.unknown_dropped += 1

    def _sequence(self, key: tuple[str, int, int], seq: int, count: int | None) -> None:
        """Count the gap between the sequence number expected and ``seq`` as lost;
        ``count`` advances it (None: unknown, resync on the next datagram).

        Some exporters (softflowd's IPFIX) number a message by the records sent
        *including* its own, where RFC 7011 says "before" it: a stream whose numbers
        step by the new message's count instead of the previous one's is taken to
        count that way from then on, so its messages are not reported lost."""
        last = self._seq.get(key)
        if last is not None:
            prev_seq, prev_n = last
            if key in self._inclusive:
                expected = (prev_seq + (count or 0)) & _U32
            else:
                expected = (prev_seq + prev_n) & _U32
                if (count and count != prev_n and seq == (prev_seq + count) & _U32):
                    self._inclusive.add(key)
                    expected = seq
            gap = (seq - expected) & _U32
            if gap < _HALF:  # a larger "gap" is a step back: a restart or reordering
                self.lost += gap
        if count is None:
            self._seq.pop(key, None)
        else:
            self._seq[key] = (seq, count)

    def _count_malformed(self, reason: str) -> None:
        self.malformed += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1

