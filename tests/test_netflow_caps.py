"""The NetFlow decoder under crafted input (issue 19): linear work per datagram, and caps
on what one datagram may cost (netmon.netflow.tsets.Limits) that cut it short and count
it as shed. Asserted by counters and by the records decoded, never by timing
(``python -m netmon.bench collector_shapes`` times the same shapes)."""

from __future__ import annotations

import struct

import pytest

from netmon.netflow.decoder import NetflowDecoder
from netmon.netflow.templates import FlowRecords
from netmon.netflow.tsets import Budget, Limits, TemplateCache
from netmon.testing.nfexport import (
    IPFIX_FIELDS,
    V9_FIELDS,
    Flow,
    crafted_shapes,
    flowset,
    ipfix_datagrams,
    ipfix_message,
    template_record,
    v9_datagrams,
    v9_packet,
)
from tests.test_netflow import EXP, NOW, V4_FLOWS, check, decode, v4_row

#: The cap each crafted shape reaches with the default limits (None: none).
SHAPE_CAPS = {
    "pending sets + templates": "sets", "1-byte pending sets + templates": "sets",
    "1-byte variable-length records": "var_fields", "distinct templates": "compiles",
    "distinct options templates": "compiles", "one template of 16k fields": "template_fields",
    "v9 distinct templates": "compiles", "withdrawal storm": "template_records",
    "tiny data sets": "sets", "tiny sets of many templates": "decodes",
    "held sets flood, then template": "records", "largest v5": None,
}


def test_every_crafted_shape_reaches_its_cap_and_nothing_else() -> None:
    limits = Limits()
    shapes = crafted_shapes()
    assert set(shapes) == set(SHAPE_CAPS)
    for name, datagrams in shapes.items():
        dec = NetflowDecoder()
        for d in datagrams:
            dec.decode(d, EXP, NOW)
        cap = SHAPE_CAPS[name]
        assert dec.shed_reasons == ({cap: 1} if cap else {}), name
        assert dec.shed == (1 if cap else 0) and dec.malformed == 0, name
        assert dec.unknown_buffered <= dec.unknown_max
        assert dec.records <= len(datagrams) * limits.records
    # What the caps let through is the work done before them:
    runs = {}
    for name in ("distinct templates", "tiny data sets", "tiny sets of many templates",
                 "held sets flood, then template", "1-byte pending sets + templates"):
        dec = NetflowDecoder()
        for d in shapes[name]:
            dec.decode(d, EXP, NOW)
        runs[name] = dec
    assert runs["distinct templates"].templates == limits.compiles
    assert runs["tiny data sets"].records == limits.sets - 1  # (one set is the template)
    assert runs["tiny sets of many templates"].records == limits.decodes
    assert runs["held sets flood, then template"].records == 1500  # 5 held sets of 300
    assert runs["1-byte pending sets + templates"].unknown_buffered == limits.sets


def test_pending_sets_wait_per_template_not_in_one_list() -> None:
    """Sets of many unknown templates, then the templates in reverse: each template
    takes its own sets (and only those), held or of its own datagram."""
    fields = [(8, 4), (7, 2)]
    held = ipfix_message([flowset(300 + i, struct.pack("!4sH", bytes([10, 0, 0, i]), i))
                          for i in range(20)], now=NOW)
    mine = [flowset(400 + i, struct.pack("!4sH", bytes([10, 1, 0, i]), i)) for i in range(20)]
    tpls = flowset(2, b"".join(template_record(t, fields)
                               for t in [*range(419, 399, -1), *range(319, 299, -1)]))
    dec = NetflowDecoder()
    assert decode(dec, [held]).src.shape == (0, 16)
    assert dec.unknown_buffered == 20
    rec = decode(dec, [ipfix_message([*mine, tpls], now=NOW)])
    got = sorted(zip(rec.src[:, 13].tolist(), rec.src[:, 15].tolist(), rec.sport.tolist(),
                     strict=True))
    assert len(rec) == 40
    assert got == sorted([(0, i, 0) for i in range(20)] + [(1, i, 0) for i in range(20)])
    assert (dec.unknown_buffered, dec.shed, dec.templates) == (0, 0, 40)


def test_withdraw_all_leaves_other_domains_and_kinds() -> None:
    dec = NetflowDecoder()
    for domain in (1, 2):
        decode(dec, ipfix_datagrams(V4_FLOWS[:1], now=NOW, domain=domain))
    opt = flowset(3, struct.pack("!HHH", 260, 1, 1) + struct.pack("!HH", 149, 4))
    decode(dec, [ipfix_message([opt], domain=1, now=NOW)])
    assert dec.templates == 3
    withdraw_all = ipfix_message([flowset(2, struct.pack("!HH", 2, 0))], domain=1, now=NOW)
    for _ in range(3):  # a storm of the same: each touches domain 1's data templates only
        decode(dec, [withdraw_all])
    assert dec.templates == 2  # domain 2's template and domain 1's options template
    check(decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=2, with_template=False)),
          V4_FLOWS)
    assert decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=1,
                                       with_template=False)).src.shape == (0, 16)


def test_sets_of_one_template_decode_together_with_their_own_times() -> None:
    """Sets held from v9 datagrams of different export times decode in one go when
    their template comes, each record timed by its own datagram's header (v9 times are
    ms of uptime relative to the header's export time)."""
    dec = NetflowDecoder()
    sent = []
    for i, f in enumerate(V4_FLOWS):
        at = NOW + 7 * i
        f = Flow(f.src, f.dst, f.sport, f.dport, f.proto, f.packets, f.octets,
                 f.start + 7 * i, f.end + 7 * i, f.tcp_flags)
        sent.append(f)
        dec.decode(v9_datagrams([f], now=at, with_template=False, seq_start=i)[0], EXP, at)
    assert dec.unknown_buffered == len(V4_FLOWS)
    template = v9_packet([flowset(0, template_record(256, V9_FIELDS[4]))], count=1,
                         seq=len(V4_FLOWS), now=NOW + 60)
    check(decode(dec, [template], NOW + 60), sent)
    assert (dec.unknown_buffered, dec.shed, dec.lost) == (0, 0, 0)


def test_a_set_cap_cuts_the_datagram_and_keeps_what_came_before() -> None:
    dec = NetflowDecoder(limits=Limits(sets=3))
    tpl = flowset(2, template_record(256, IPFIX_FIELDS[4]))
    msg = ipfix_message([tpl, *(flowset(256, v4_row(f)) for f in V4_FLOWS)], now=NOW)
    check(decode(dec, [msg]), V4_FLOWS[:2])
    assert (dec.shed, dec.shed_reasons, dec.malformed) == (1, {"sets": 1}, 0)
    # The IPFIX record count of a cut message is unknown: the next is not "lost".
    decode(dec, ipfix_datagrams(V4_FLOWS[:1], now=NOW, seq_start=len(V4_FLOWS)))
    decode(dec, ipfix_datagrams(V4_FLOWS[:1], now=NOW, seq_start=len(V4_FLOWS) + 1))
    assert dec.lost == 0


def test_held_sets_past_the_cap_stay_held_for_the_next_template() -> None:
    dec = NetflowDecoder(limits=Limits(records=3))
    for i, f in enumerate(V4_FLOWS):
        dec.decode(ipfix_datagrams([f], now=NOW, with_template=False, seq_start=i)[0], EXP,
                   NOW)
    template = ipfix_message([flowset(2, template_record(256, IPFIX_FIELDS[4]))], now=NOW)
    first = decode(dec, [template])
    assert len(first) == 3 and dec.unknown_buffered == len(V4_FLOWS) - 3
    assert dec.shed_reasons == {"records": 1}
    rest = decode(dec, [template])
    check(FlowRecords.concat([first, rest]), V4_FLOWS)
    assert (dec.unknown_buffered, dec.unknown_dropped) == (0, 0)


def test_variable_length_walk_is_capped_per_datagram() -> None:
    dec = NetflowDecoder(limits=Limits(var_fields=10))
    var = flowset(2, template_record(256, [(8, 4), (82, 65535)]))  # address, interface name
    rows = b"".join(bytes([10, 0, 0, i]) + b"\x02ab" for i in range(8))
    assert len(decode(dec, [ipfix_message([var, flowset(256, rows[:7 * 5])], now=NOW)])) == 5
    assert dec.shed == 0
    assert len(decode(dec, [ipfix_message([var, flowset(256, rows)], now=NOW)])) == 0
    assert dec.shed_reasons == {"var_fields": 1}


def test_held_bytes_are_bounded() -> None:
    dec = NetflowDecoder(unknown_max_bytes=10_000)
    for i in range(10):
        dec.decode(ipfix_message([flowset(256, bytes(3000))], now=NOW, seq=i), EXP, NOW)
    assert dec.unknown_buffered == 3 and dec.unknown_dropped == 7


@pytest.mark.parametrize("cap", ["template_records", "template_fields", "compiles"])
def test_template_caps_keep_the_templates_before_them(cap: str) -> None:
    """A template set cut by a cap applies the templates before it; it is not cached
    cut, so the same set under a fresh budget gives them all."""
    limits = Limits(**{cap: {"template_records": 2, "template_fields": 25, "compiles": 2}[cap]})
    body = b"".join(template_record(256 + i, [*IPFIX_FIELDS[4], (200 + i, 1)])
                    for i in range(4))
    cache = TemplateCache()
    ops, cut = cache.ops(10, 2, body, Budget.of(limits))
    assert (len(ops), cut) == (2, cap)
    ops, cut = cache.ops(10, 2, body, Budget.of(Limits()))
    assert (len(ops), cut) == (4, None)
    dec = NetflowDecoder(limits=limits)
    decode(dec, [ipfix_message([flowset(2, body)], now=NOW)])
    assert dec.templates == 2 and dec.shed_reasons == {cap: 1}
