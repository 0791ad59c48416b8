"""The address -> name cache: TTL expiry on the capture clock, clamping, the LRU bound,
memory per entry, glue never replacing answers, and the vectorised lookup agreeing
with one-by-one lookups (fold collisions included)."""

from __future__ import annotations

import gc
import ipaddress
import random
import tracemalloc

import numpy as np
import pytest

from netmon.names import cache as cache_mod
from netmon.names.cache import EVICT_FRACTION, TTL_MAX, TTL_MIN, NameCache
from netmon.names.dns import TYPE_A, TYPE_CNAME, parse_dns
from netmon.testing.names import dns_response

V4 = bytes(12)
T0 = 1_700_000_000.0


def v4(i: int) -> bytes:
    return V4 + i.to_bytes(4, "big")


def test_entries_expire_ttl_seconds_after_the_packet_clamped() -> None:
    c = NameCache()
    c.add(v4(1), 4, "a.example", "dns", 300, T0)
    c.add(v4(2), 4, "short.example", "dns", 5, T0)  # clamped up to TTL_MIN
    c.add(v4(3), 4, "long.example", "dns", 10**9, T0)  # clamped down to TTL_MAX
    assert c.get(v4(1), 4, T0 + 299.9).name == "a.example"
    assert c.get(v4(1), 4, T0 + 300) is None and len(c) == 2
    assert c.get(v4(2), 4, T0 + TTL_MIN - 0.1).expiry == T0 + TTL_MIN
    assert c.get(v4(2), 4, T0 + TTL_MIN) is None
    assert c.get(v4(3), 4, T0 + TTL_MAX - 1).expiry == T0 + TTL_MAX
    assert c.expire(T0 + TTL_MAX) == 1 and len(c) == 0 and c.expired == 3


def test_ipv4_and_ipv6_keys_are_distinct_and_bad_keys_are_refused() -> None:
    c = NameCache()
    six = ipaddress.ip_address("::1.2.3.4").packed  # same last four bytes as 1.2.3.4
    assert c.add(v4(0x01020304), 4, "four", "dns", 60, T0)
    assert c.add(six, 6, "six", "dns", 60, T0)
    assert c.get(v4(0x01020304), 4, T0).name == "four" and c.get(six, 6, T0).name == "six"
    assert not c.add(b"\x01\x02\x03\x04", 4, "short", "dns", 60, T0)
    assert not c.add(six, 5, "fam", "dns", 60, T0) and len(c) == 2
    with pytest.raises(ValueError):
        NameCache(0)


def test_a_message_fills_it_and_glue_never_replaces_an_answer() -> None:
    msg = parse_dns(dns_response([("www.reddit.com", TYPE_A)], [
        ("www.reddit.com", TYPE_CNAME, 300, "reddit.map.fastly.net"),
        ("reddit.map.fastly.net", TYPE_A, 30, bytes([151, 101, 1, 140]))], [],
        [("other.fastly.net", TYPE_A, 3600, bytes([151, 101, 1, 140])),
         ("ns.fastly.net", TYPE_A, 3600, bytes([10, 0, 0, 1]))]))
    c = NameCache()
    assert c.add_message(msg, T0) == 2  # the glue for the same address is not stored
    e = c.get(v4(0x9765018C), 4, T0)
    assert (e.name, e.alias, e.source) == ("www.reddit.com", "reddit.map.fastly.net", "dns")
    assert c.get(v4(0x0A000001), 4, T0).name == "ns.fastly.net"
    # Once the answer has expired, glue may name the address.
    assert c.add(v4(0x9765018C), 4, "glue.example", "dns", 60, T0 + 61, weak=True)
    # And a new answer replaces glue.
    assert c.add(v4(0x0A000001), 4, "answer.example", "mdns", 60, T0)
    assert c.get(v4(0x0A000001), 4, T0).source == "mdns"


def test_lru_bound_evicts_the_least_recently_used() -> None:
    cap = 1000
    c = NameCache(cap)
    for i in range(cap):
        c.add(v4(i), 4, f"h{i}", "dns", 3600, T0)
    keep = list(range(0, cap, 10))  # used again: must survive the eviction
    for i in keep:
        assert c.get(v4(i), 4, T0 + 1) is not None
    c.add(v4(10**6), 4, "new", "dns", 3600, T0 + 2)
    assert len(c) == cap - int(cap * EVICT_FRACTION) + 1 and c.evicted == int(cap * EVICT_FRACTION)
    assert all(c.get(v4(i), 4, T0 + 3) is not None for i in keep)
    gone = [i for i in range(cap) if c.get(v4(i), 4, T0 + 3) is None]
    assert gone == [i for i in range(cap) if i % 10][:int(cap * EVICT_FRACTION)]
    for i in range(5 * cap):  # a flood of new names never grows past the cap
        c.add(v4(2 * 10**6 + i), 4, "flood", "dns", 3600, T0 + 4)
        assert len(c) <= cap


def test_expired_entries_go_before_live_ones_when_full() -> None:
    c = NameCache(100)
    for i in range(50):
        c.add(v4(i), 4, "old", "dns", 60, T0)
    for i in range(50, 100):
        c.add(v4(i), 4, "live", "dns", 3600, T0)
    c.add(v4(1000), 4, "new", "dns", 60, T0 + 100)
    assert len(c) == 51 and c.evicted == 0 and c.expired == 50


def test_lookup_many_matches_get_for_both_families() -> None:
    rng = random.Random(5)
    c = NameCache(5000)
    addrs, fams = [], []
    for i in range(3000):
        if i % 3:
            a, f = v4(rng.getrandbits(32)), 4
        else:
            a, f = rng.randbytes(16), 6
        c.add(a, f, f"n{i}", "dns", rng.choice([60, 600]), T0)
        addrs.append(a)
        fams.append(f)
    for i in range(2000):  # unknown addresses mixed in
        addrs.append(v4(rng.getrandbits(32)) if i % 2 else rng.randbytes(16))
        fams.append(4 if i % 2 else 6)
    arr = np.frombuffer(b"".join(addrs), np.uint8).reshape(-1, 16)
    fam = np.array(fams, np.uint8)
    now = T0 + 100  # the 60 s names have expired
    got = c.lookup_many(arr, fam, now)
    want = [c.get(a, f, now) for a, f in zip(addrs, fams, strict=True)]
    assert list(got) == want and 500 < sum(e is not None for e in want) < 2500
    assert len(c.lookup_many(arr[:0], fam[:0], now)) == 0


def test_lookup_many_survives_fold_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a fold of 0 every IPv6 key folds to its low word: make many keys collide.
    monkeypatch.setattr(cache_mod, "_FOLD", np.uint64(0))
    c = NameCache()
    keys = [bytes([h]) + bytes(14) + b"\x07" for h in range(1, 40)]
    for i, k in enumerate(keys):
        c.add(k, 6, f"k{i}", "dns", 600, T0)
    arr = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 16)
    got = c.lookup_many(arr, np.full(len(keys), 6), T0)
    assert [e.name for e in got] == [f"k{i}" for i in range(len(keys))]


def test_memory_per_entry_is_as_documented() -> None:
    n = 100_000
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    c = NameCache(n)
    for i in range(n):
        c.add(v4(i), 4, f"host{i:07d}.example.com", "dns", 3600, T0)  # 24-char names
    c.lookup_many(np.zeros((1, 16), np.uint8), np.array([4]), T0)  # builds the index
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per = used / n
    print(f"{per:.0f} bytes per entry")
    assert per < 360, per  # the docstring says 334


def test_the_names_benchmark_runs_and_the_fuzz_target_finds_nothing(capsys) -> None:
    from netmon.bench import fuzz, names

    assert names.main(["--repeat", "1", "--addresses", "2000"]) == 0
    out = capsys.readouterr().out
    assert "responses/s" in out and "lookup_many" in out and "banners/s" in out
    result = fuzz.fuzz("names", 2.0, 14)
    assert result["runs"] > 1000 and result["crashes"] == 0, result["first_crash"]
