"""TLS client fingerprints of a ClientHello: JA3 (Salesforce) and JA4 (FoxIO).

Pure functions (stdlib only), any thread. Both drop GREASE values (RFC 8701) wherever
they appear. JA3 is computed as Wireshark/tshark 4.0 does for ``tls.handshake.ja3_full``
and ``tls.handshake.ja3``: decimal ``version,ciphers,extensions,groups,point_formats``
with ``-`` between values, and the MD5 of that string. JA4 follows FoxIO's
technical_details/JA4.md:

``t13d1516h2_8daaf6152771_e5627efa2ab1`` = protocol (``t`` TCP, ``q`` QUIC), version
(supported_versions' highest, else the hello's version), ``d``/``i`` (SNI extension present
or not), cipher count and extension count (2 digits, at most 99), the first and last
character of the first ALPN protocol (``00`` when none; the hex digits when either end is
not alphanumeric), then the first 12 hex digits of the SHA-256 of the sorted cipher list,
and of the sorted extension list without SNI and ALPN followed by ``_`` and the signature
algorithms in the order sent (``000000000000`` for an empty list).
"""

from __future__ import annotations

import hashlib

from netmon.names.tls import EXT_ALPN, EXT_SERVER_NAME, ClientHello, is_grease

_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}
_EMPTY = "000000000000"


def _no_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def ja3_string(hello: ClientHello) -> str:
    """The JA3 string (tshark's ``tls.handshake.ja3_full``)."""
    return ",".join((
        str(hello.legacy_version),
        "-".join(map(str, _no_grease(hello.ciphers))),
        "-".join(map(str, _no_grease(hello.extensions))),
        "-".join(map(str, _no_grease(hello.groups))),
        # Point formats are one byte each: no GREASE value can occur there.
        "-".join(map(str, hello.ec_point_formats)),
    ))


def ja3(hello: ClientHello) -> str:
    """The JA3 fingerprint: MD5 of :func:`ja3_string` (tshark's ``tls.handshake.ja3``)."""
    return hashlib.md5(ja3_string(hello).encode("ascii"), usedforsecurity=False).hexdigest()


def _alpn_chars(first: bytes) -> str:
    if not first:
        return "00"
    a, z = first[0], first[-1]
    if _alnum(a) and _alnum(z):
        return chr(a) + chr(z)
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def ja4_parts(hello: ClientHello, quic: bool = False) -> tuple[str, str, str]:
    """JA4's three parts before hashing: the ``a`` prefix, the sorted cipher list, and
    the sorted extension list ``_`` signature algorithms (FoxIO's "JA4_r" pieces)."""
    ciphers = _no_grease(hello.ciphers)
    exts = _no_grease(hello.extensions)
    a = "".join((
        "q" if quic else "t",
        _JA4_VERSIONS.get(hello.version, "00"),
        "d" if EXT_SERVER_NAME in exts else "i",
        f"{min(len(ciphers), 99):02d}",
        f"{min(len(exts), 99):02d}",
        _alpn_chars(hello.alpn_first_raw),
    ))
    b = ",".join(f"{c:04x}" for c in sorted(ciphers))
    c = ",".join(f"{e:04x}" for e in sorted(exts) if e not in (EXT_SERVER_NAME, EXT_ALPN))
    sigs = ",".join(f"{s:04x}" for s in _no_grease(hello.signature_algorithms))
    if c and sigs:
        c = f"{c}_{sigs}"
    return a, b, c


def ja4(hello: ClientHello, quic: bool = False) -> str:
    """The JA4 fingerprint of ``hello`` (``quic`` when it came in QUIC CRYPTO frames)."""
    a, b, c = ja4_parts(hello, quic)
    return f"{a}_{_hash12(b) if b else _EMPTY}_{_hash12(c) if c else _EMPTY}"
