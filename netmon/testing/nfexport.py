"""Builders of NetFlow v5, v9 and IPFIX datagrams, as an exporter would send them.

Pure module (stdlib only), no state: any thread may call it. It is the reference the
decoder's tests (:mod:`netmon.netflow.decoder`) check against and what the benchmark sender
sends, so it favours plain, obviously correct code over speed.

Times: v5 and v9 carry flow times as milliseconds of the exporter's uptime, relative to
the header's export time; IPFIX as flowStart/EndMilliseconds (epoch ms). Times decode
to the millisecond when the export time ``now`` is a whole second (v9 sends whole
seconds only; v5 adds nanoseconds).
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: The uptime (ms) v9 datagrams claim, whatever the time.
V9_UPTIME_MS = 3_600_000
#: A field specifier: (information element, length) or (ie, length, enterprise number).
FieldSpec = tuple[int, int] | tuple[int, int, int]

#: v9 templates (IPv4, IPv6): addresses, ports, protocol, TCP flags, packets (4 bytes),
#: octets (8 bytes), FIRST_SWITCHED and LAST_SWITCHED (ms of uptime).
V9_FIELDS = {4: ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 4), (1, 8),
                 (22, 4), (21, 4)),
             6: ((27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (6, 1), (2, 4), (1, 8),
                 (22, 4), (21, 4))}
#: IPFIX templates: the same with 8-byte counters and flowStart/EndMilliseconds.
IPFIX_FIELDS = {4: ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 8), (1, 8),
                    (152, 8), (153, 8)),
                6: ((27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (6, 1), (2, 8), (1, 8),
                    (152, 8), (153, 8))}
_V9_REC = {4: "!4s4sHHBBIQII", 6: "!16s16sHHBBIQII"}
_IPFIX_REC = {4: "!4s4sHHBBQQQQ", 6: "!16s16sHHBBQQQQ"}


@dataclass(frozen=True)
class Flow:
    """One direction of a flow, as an exporter reports it."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    packets: int
    octets: int
    start: float  # epoch seconds
    end: float
    tcp_flags: int = 0

    @property
    def fam(self) -> int:
        return ipaddress.ip_address(self.src).version


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def _uptime_ms(t: float, export_secs: float, uptime_ms: int) -> int:
    """Time ``t`` as ms of an uptime that reads ``uptime_ms`` at ``export_secs``."""
    return (uptime_ms - round((export_secs - t) * 1000)) & 0xFFFFFFFF


def _chunks(items: Sequence[Flow], size: int) -> list[Sequence[Flow]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def template_record(template_id: int, fields: Sequence[FieldSpec]) -> bytes:
    """A template record; a field with an enterprise number gets the enterprise bit
    (IPFIX only)."""
    out = struct.pack("!HH", template_id, len(fields))
    for spec in fields:
        if len(spec) == 3:
            out += struct.pack("!HHI", spec[0] | 0x8000, spec[1], spec[2])
        else:
            out += struct.pack("!HH", spec[0], spec[1])
    return out


def options_template_record(template_id: int, fields: Sequence[FieldSpec], scope: int = 1
                            ) -> bytes:
    """An IPFIX options template record: the first ``scope`` fields are its scope."""
    plain = template_record(template_id, fields)
    return plain[:4] + struct.pack("!H", scope) + plain[4:]


def flowset(set_id: int, body: bytes, *, align: int = 1) -> bytes:
    """A set (v9: flowset): ID, length, body, zero padding up to a multiple of ``align``."""
    body += bytes(-(len(body) + 4) % align)
    return struct.pack("!HH", set_id, len(body) + 4) + body


def v9_packet(flowsets: Sequence[bytes], *, count: int, source_id: int = 0, seq: int = 0,
              uptime_ms: int = V9_UPTIME_MS, now: float | None = None) -> bytes:
    """A v9 export packet: header (``count`` records) then the flowsets as built."""
    secs = int(time.time() if now is None else now)
    return struct.pack("!HHIIII", 9, count, uptime_ms, secs, seq & 0xFFFFFFFF,
                       source_id) + b"".join(flowsets)


def ipfix_message(sets: Sequence[bytes], *, domain: int = 0, seq: int = 0,
                  now: float | None = None) -> bytes:
    """An IPFIX message: header then the sets as built."""
    body = b"".join(sets)
    secs = int(time.time() if now is None else now)
    return struct.pack("!HHIII", 10, 16 + len(body), secs, seq & 0xFFFFFFFF, domain) + body


def v5_datagrams(flows: Sequence[Flow], *, seq_start: int = 0, uptime_ms: int = 3_600_000,
                 now: float | None = None, engine_id: int = 0) -> list[bytes]:
    """NetFlow v5 datagrams of 30 records at most (IPv4 only: ValueError otherwise)."""
    now = time.time() if now is None else now
    secs = int(now)
    nsecs = min(round((now - secs) * 1e9), 999_999_999)
    out, seq = [], seq_start
    for chunk in _chunks(flows, 30):
        recs = b""
        for f in chunk:
            if f.fam != 4:
                raise ValueError(f"NetFlow v5 carries IPv4 only, not {f.src}")
            recs += struct.pack(
                "!4s4s4sHHIIIIHHBBBBHHBBH", _packed(f.src), _packed(f.dst), bytes(4), 0, 0,
                f.packets, f.octets, _uptime_ms(f.start, now, uptime_ms),
                _uptime_ms(f.end, now, uptime_ms), f.sport, f.dport, 0, f.tcp_flags,
                f.proto, 0, 0, 0, 0, 0, 0)
        out.append(struct.pack("!HHIIIIBBH", 5, len(chunk), uptime_ms, secs, nsecs,
                               seq & 0xFFFFFFFF, 0, engine_id, 0) + recs)
        seq += len(chunk)
    return out


def _family_sets(chunk: Sequence[Flow], template_id: int, fields: dict, fmt: dict,
                 times: Callable[[Flow], tuple[int, int]], with_template: bool,
                 align: int = 1) -> tuple[list[bytes], list[bytes]]:
    """(template records, data sets) for ``chunk``: IPv4 flows under ``template_id``,
    IPv6 ones under ``template_id + 1``; ``times`` gives each flow's two time fields."""
    templates, data = [], []
    for fam in (4, 6):
        mine = [f for f in chunk if f.fam == fam]
        if not mine:
            continue
        tid = template_id + (fam == 6)
        if with_template:
            templates.append(template_record(tid, fields[fam]))
        data.append(flowset(tid, b"".join(
            struct.pack(fmt[fam], _packed(f.src), _packed(f.dst), f.sport, f.dport, f.proto,
                        f.tcp_flags, f.packets, f.octets, *times(f)) for f in mine),
            align=align))
    return templates, data


def v9_datagrams(flows: Sequence[Flow], *, source_id: int = 0, template_id: int = 256,
                 with_template: bool = True, seq_start: int = 0, per_datagram: int = 24,
                 now: float | None = None) -> list[bytes]:
    """NetFlow v9 packets of ``per_datagram`` records at most: IPv4 flows under
    ``template_id``, IPv6 ones under ``template_id + 1``; each packet carries the
    templates it uses when ``with_template``. Data flowsets are padded to 4 bytes."""
    secs = int(time.time() if now is None else now)

    def times(f: Flow) -> tuple[int, int]:
        return (_uptime_ms(f.start, secs, V9_UPTIME_MS), _uptime_ms(f.end, secs, V9_UPTIME_MS))
    out = []
    for i, chunk in enumerate(_chunks(flows, per_datagram)):
        templates, data = _family_sets(chunk, template_id, V9_FIELDS, _V9_REC, times,
                                       with_template, align=4)
        sets = [flowset(0, b"".join(templates))] if templates else []
        out.append(v9_packet(sets + data, count=len(chunk) + len(templates),
                             source_id=source_id, seq=seq_start + i, now=secs))
    return out


def ipfix_datagrams(flows: Sequence[Flow], *, domain: int = 0, template_id: int = 256,
                    with_template: bool = True, seq_start: int = 0, per_datagram: int = 24,
                    now: float | None = None) -> list[bytes]:
    """IPFIX messages of ``per_datagram`` records at most: IPv4 flows under
    ``template_id``, IPv6 ones under ``template_id + 1``; each message carries the
    templates it uses when ``with_template``. Sequence numbers count data records."""
    secs = int(time.time() if now is None else now)

    def times(f: Flow) -> tuple[int, int]:
        return round(f.start * 1000), round(f.end * 1000)
    out, seq = [], seq_start
    for chunk in _chunks(flows, per_datagram):
        templates, data = _family_sets(chunk, template_id, IPFIX_FIELDS, _IPFIX_REC, times,
                                       with_template)
        sets = [flowset(2, b"".join(templates))] if templates else []
        out.append(ipfix_message(sets + data, domain=domain, seq=seq, now=secs))
        seq += len(chunk)
    return out


def ipfix_withdrawal(template_id: int, *, domain: int = 0, now: float | None = None,
                     seq: int = 0) -> bytes:
    """An IPFIX message withdrawing ``template_id`` (2: every template of the domain)."""
    return ipfix_message([flowset(2, struct.pack("!HH", template_id, 0))], domain=domain,
                         seq=seq, now=now)


# ------------------------------------------------------------------ crafted shapes
#: Export time of the crafted shapes (whole seconds: v9 and IPFIX send no fraction).
CRAFT_NOW = 1_700_000_000
#: The largest UDP payload over IPv4.
MAX_UDP = 65_507


def normal_ipfix(size: int, *, now: int = CRAFT_NOW) -> bytes:
    """An IPFIX message as softflowd-like exporters send it (its template, then one data
    set of IPv4 flows under it), with as many records as fit in about ``size`` bytes."""
    head = 16 + 4 + len(template_record(256, IPFIX_FIELDS[4])) + 4
    n = max(1, (size - head) // struct.calcsize(_IPFIX_REC[4]))
    flows = [Flow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "192.0.2.1", 1024 + i % 60000,
                  443, 6, 3, 1500, now - 2, now - 1, 0x1b) for i in range(n)]
    return ipfix_datagrams(flows, now=now, per_datagram=n)[0]


def _fill(unit: bytes, room: int) -> bytes:
    return unit * (room // len(unit))


def crafted_shapes(now: int = CRAFT_NOW) -> dict[str, list[bytes]]:
    """Datagram sequences a hostile sender may craft to make a collector work hard per
    byte received, by name; each is meant for one fresh decoder, in order. Sizes are
    the largest UDP allows unless the shape needs many datagrams."""
    room = MAX_UDP - 16 - 4  # one IPFIX set filling a message
    addr = (8, 4)
    shapes: dict[str, list[bytes]] = {}
    # Issue 19's: empty (and 1-byte) sets for a template never defined, then templates.
    empty = flowset(299, b"") * 7000
    tpls = b"".join(template_record(300 + i, [addr]) for i in range((room - len(empty) - 4) // 12))
    shapes["pending sets + templates"] = [ipfix_message([empty, flowset(2, tpls)], now=now)]
    one = flowset(299, b"\x00") * 5000
    tpls = b"".join(template_record(300 + i, [addr]) for i in range((room - len(one) - 4) // 12))
    shapes["1-byte pending sets + templates"] = [ipfix_message([one, flowset(2, tpls)], now=now)]
    # Records of one variable-length field, one byte each (its length: 0).
    var = flowset(2, template_record(256, [(8, 65535)]))
    shapes["1-byte variable-length records"] = [
        ipfix_message([var, flowset(256, bytes(room - len(var)))], now=now)]
    # Templates, each different (no cache helps), of addresses and an unknown field.
    many = b"".join(template_record(256 + i, [addr, (200 + i % 50, 1 + i // 50)])
                    for i in range(room // 12))
    shapes["distinct templates"] = [ipfix_message([flowset(2, many)], now=now)]
    opts = b"".join(options_template_record(256 + i, [addr, (200 + i % 50, 1 + i // 50)])
                    for i in range(room // 14))
    shapes["distinct options templates"] = [ipfix_message([flowset(3, opts)], now=now)]
    shapes["one template of 16k fields"] = [ipfix_message(
        [flowset(2, template_record(256, [addr] + [(200, 1)] * ((room - 12) // 4)))], now=now)]
    v9 = b"".join(template_record(256 + i, [addr, (200 + i % 50, 1 + i // 50)])
                  for i in range((MAX_UDP - 24) // 12))
    shapes["v9 distinct templates"] = [v9_packet([flowset(0, v9)], count=1, now=now)]
    # Withdrawals: of single templates and of all, alternating, after templates.
    storm = b"".join(struct.pack("!HHHH", 256 + i, 0, 2, 0) for i in range(room // 8))
    shapes["withdrawal storm"] = [*ipfix_datagrams(
        [Flow("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 40, now - 1, now)], now=now),
        ipfix_message([flowset(2, storm)], now=now)]
    # Many tiny data sets of a known template (one record of 4 bytes each) ...
    tiny = flowset(2, template_record(256, [addr]))
    shapes["tiny data sets"] = [ipfix_message(
        [tiny, _fill(flowset(256, b"\x0a\x00\x00\x01"), room - len(tiny))], now=now)]
    # ... and one per template, over many templates known already (each different:
    # templates of the same fields share their compiled form, and decode together).
    def odd(i: int) -> list[FieldSpec]:
        return [addr, (200 + i % 50, 1 + i // 50)]
    defs = [flowset(2, b"".join(template_record(256 + 16 * k + i, odd(16 * k + i))
                                for i in range(16))) for k in range(40)]
    sets = b"".join(flowset(256 + i, bytes(5 + i // 50)) for i in range(640))
    shapes["tiny sets of many templates"] = [*(ipfix_message([d], now=now) for d in defs),
                                             ipfix_message([sets], now=now)]
    # Sets held across datagrams (each of another export time), then their template.
    held = [ipfix_message([flowset(256, b"\x0a\x00\x00\x01" * 300)], now=now - i, seq=i)
            for i in range(1000)]
    shapes["held sets flood, then template"] = [*held, ipfix_message([tiny], now=now)]
    shapes["largest v5"] = v5_datagrams(
        [Flow("10.0.0.1", "10.0.0.2", i, 80, 6, 1, 40, now - 1, now) for i in range(30)],
        now=now)
    return shapes
