"""NetFlow v9 / IPFIX templates and NetFlow v5 records -> columns of flow records.

Pure module (stdlib and numpy only), used by :mod:`netmon.netflow.decoder` on whichever thread
owns the decoder (the reactor thread in netmon); it keeps no state.

Speed comes from numpy: a v5 datagram is one ``np.frombuffer`` with a big-endian
structured dtype, and every v9/IPFIX template whose fields all have fixed lengths is
compiled once (:func:`compile_template`) into a structured dtype that picks just the
fields netmon reads, so a whole data set is one ``np.frombuffer`` too; the columns are
then built vectorised (:func:`build_records`). Templates with variable-length fields
take a per-record walk (:func:`walk_records`) that copies the fields read into the same
kind of fixed layout, then share the vectorised path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Field length meaning "variable length" in a template (IPFIX; tolerated in v9 too).
VARLEN = 65535
#: Private enterprise number of RFC 5103 reverse (biflow) information elements.
REVERSE_PEN = 29305
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
#: NetFlow v5: header and record sizes, and the most records one datagram may carry.
V5_HEADER, V5_RECORD, V5_MAX_COUNT = 24, 48, 30

U32 = 0xFFFFFFFF
HALF = 1 << 31

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
V5_DTYPE = np.dtype({
    "names": ["src4", "dst4", "packets", "octets", "up_start", "up_end", "sport", "dport",
              "flags", "proto"],
    "formats": [("u1", (4,)), ("u1", (4,)), ">u4", ">u4", ">u4", ">u4", ">u2", ">u2",
                "u1", "u1"],
    "offsets": [0, 4, 16, 20, 24, 28, 32, 34, 37, 38], "itemsize": V5_RECORD})
V5_ROLES = frozenset(V5_DTYPE.names or ())

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


class Malformed(Exception):
    """A datagram that breaks its format; ``args[0]`` is the reason counted."""


class Shed(Exception):
    """A per-datagram work cap was reached (see :class:`netmon.netflow.tsets.Limits`);
    ``args[0]`` names the cap. The rest of the datagram is skipped, and counted."""


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a data set's times are relative to: the export time of its datagram and,
    for v5/v9, the exporter's uptime (ms) at that time. Records of several datagrams
    decoded at once (one template's held sets) carry one value per record: numpy
    arrays in place of the numbers."""

    export: float | np.ndarray
    uptime: int | np.ndarray | None
    #: IPFIX: the exporter's systemInitTimeMilliseconds (IE 160) as sent in options
    #: data (softflowd does), for records that give times as uptime offsets only.
    init_ms: int | np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Template:
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


def compile_template(fields: list[tuple[int, int, int]], options: bool) -> Template:
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
    return Template(lengths, options, minlen, variable, roles, dtype, picks, init_at)


def walk_records(tpl: Template, data: bytes, b0: int, b1: int, max_records: int = -1
                 ) -> tuple[int, bytes]:
    """Walk the variable-length records of ``data[b0:b1]``: their number, and the fields
    netmon reads copied into the fixed layout of ``tpl.dtype`` (integers as 8 bytes).
    Raises Shed("var_fields") before walking record ``max_records`` + 1 (when >= 0):
    this walk is Python per field, a hundred times the cost per byte of a fixed-length
    record, so the caller caps it per datagram."""
    out = bytearray()
    lengths, picks, minlen = tpl.lengths, tpl.picks, tpl.minlen
    n, off = 0, b0
    while b1 - off >= minlen:  # fewer bytes than the shortest record: padding
        if n == max_records:
            raise Shed("var_fields")
        for i, ln in enumerate(lengths):
            if ln == VARLEN:
                if off >= b1:
                    raise Malformed("varlen overrun")
                ln = data[off]
                off += 1
                if ln == 255:  # RFC 7011 7: 255, then the length in two bytes
                    if off + 2 > b1:
                        raise Malformed("varlen overrun")
                    ln = (data[off] << 8) | data[off + 1]
                    off += 2
            if off + ln > b1:
                raise Malformed("varlen overrun")
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


def _time(rec: np.ndarray, roles: frozenset[str], ctx: Ctx, which: str) -> np.ndarray | None:
    """Epoch seconds of the flows' start (``which`` "start") or end, from the most precise
    time field present, or None when there is none."""
    role = "ms_" + which
    if role in roles:
        return _col(rec, role).astype(np.float64) / 1e3
    role = "ntp_" + which
    if role in roles:  # NTP format: seconds since 1900, then a 32-bit fraction
        v = _col(rec, role)
        secs = (v >> np.uint64(32)).astype(np.float64) - NTP_UNIX_OFFSET
        return secs + (v & np.uint64(U32)).astype(np.float64) / 2.0 ** 32
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
        ref = np.asarray(ctx.uptime).astype(np.uint32)
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


def build_records(rec: np.ndarray, roles: frozenset[str], ctx: Ctx) -> FlowRecords:
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
