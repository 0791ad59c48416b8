"""Builders of TLS ClientHellos, TLS records and protected QUIC Initial packets.

Pure module (stdlib, ``cryptography``), caller's thread; for tests and benchmarks of
``netmon.names.tls``/``quic``/``ja``. Every builder returns ``bytes``; nothing is sent.
Extensions are given as (type, body) pairs in wire order, so a test can put GREASE,
duplicates or malformed bodies anywhere; ``ext_*`` build the usual bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from netmon.names.quic import QUIC_V1, QUIC_V2, initial_keys

Extension = tuple[int, bytes]


def _u16s(values: Iterable[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def ext_sni(name: bytes | str) -> Extension:
    raw = name.encode() if isinstance(name, str) else name
    entry = b"\x00" + len(raw).to_bytes(2, "big") + raw
    return 0x0000, len(entry).to_bytes(2, "big") + entry


def ext_alpn(*protocols: bytes | str) -> Extension:
    raw = [p.encode() if isinstance(p, str) else p for p in protocols]
    body = b"".join(bytes([len(p)]) + p for p in raw)
    return 0x0010, len(body).to_bytes(2, "big") + body


def ext_versions(*versions: int) -> Extension:
    return 0x002B, bytes([2 * len(versions)]) + _u16s(versions)


def ext_groups(*groups: int) -> Extension:
    return 0x000A, (2 * len(groups)).to_bytes(2, "big") + _u16s(groups)


def ext_point_formats(*formats: int) -> Extension:
    return 0x000B, bytes([len(formats)]) + bytes(formats)


def ext_sig_algs(*algs: int) -> Extension:
    return 0x000D, (2 * len(algs)).to_bytes(2, "big") + _u16s(algs)


def client_hello(ciphers: Sequence[int], extensions: Sequence[Extension] | None,
                 legacy_version: int = 0x0303, session_id: bytes = b"") -> bytes:
    """A ClientHello handshake message (4-byte header included); ``extensions`` None
    leaves the extensions block out, as TLS 1.0 clients may."""
    body = (legacy_version.to_bytes(2, "big") + bytes(range(32))
            + bytes([len(session_id)]) + session_id
            + (2 * len(ciphers)).to_bytes(2, "big") + _u16s(ciphers) + b"\x01\x00")
    if extensions is not None:
        ext = b"".join(t.to_bytes(2, "big") + len(b).to_bytes(2, "big") + b
                       for t, b in extensions)
        body += len(ext).to_bytes(2, "big") + ext
    return b"\x01" + len(body).to_bytes(3, "big") + body


def tls_records(message: bytes, sizes: Iterable[int] = (), version: int = 0x0301) -> bytes:
    """``message`` as handshake records whose fragments have ``sizes`` (the rest, in
    records of at most 16384 bytes, after them)."""
    out = bytearray()
    pos = 0
    sizes = list(sizes)
    while pos < len(message):
        n = sizes.pop(0) if sizes else 16384
        frag = message[pos:pos + n]
        out += b"\x16" + version.to_bytes(2, "big") + len(frag).to_bytes(2, "big") + frag
        pos += n
    return bytes(out)


def varint(n: int) -> bytes:
    """QUIC variable-length integer, shortest encoding."""
    for size, tag in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if n < 1 << (8 * size - 2):
            return (n | (tag << (8 * size - 8))).to_bytes(size, "big")
    raise ValueError(n)


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def quic_initial(dcid: bytes, frames: bytes, *, version: int = QUIC_V1, scid: bytes = b"",
                 pn: int = 0, token: bytes = b"", size: int = 1200,
                 keys_dcid: bytes | None = None) -> bytes:
    """A client Initial packet of ``size`` bytes (PADDING added) carrying ``frames``,
    protected with the keys of ``keys_dcid`` (``dcid`` by default); 4-byte packet number."""
    keys = initial_keys(dcid if keys_dcid is None else keys_dcid, version)
    kind = {QUIC_V1: 0, QUIC_V2: 1}[version]
    head = (bytes([0xC0 | (kind << 4) | 3]) + version.to_bytes(4, "big")
            + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
            + varint(len(token)) + token)
    fixed = len(head) + 2 + 4 + 16  # 2-byte Length, packet number, AEAD tag
    payload = frames + bytes(max(size - fixed - len(frames), 0))
    header = bytearray(head + (0x4000 | (4 + len(payload) + 16)).to_bytes(2, "big")
                       + pn.to_bytes(4, "big"))
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, bytes(header))
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sealed[:16])
    header[0] ^= mask[0] & 0x0F
    for i in range(4):
        header[-4 + i] ^= mask[1 + i]
    return bytes(header) + sealed
