"""Flows as ``--flows-out`` JSON lines, rendered from the table's numpy columns in bulk.

Pure module (numpy and the standard library), called by the reactor thread through
:class:`netmon.export.flowsout.FlowsOutWriter`. The text is exactly what
``json.dumps(FlowView.to_json(), separators=(",", ":"))`` gives for each flow, key
for key (tests hold the two to it), at a fraction of the cost: building a FlowView
and a dict per flow and dumping it took ~20 us a flow, 85 s for 4 M.

How: each field becomes a fixed-width block of bytes per row (NUL where a value is
shorter than the widest in the chunk); the blocks and the constant text between them
sit side by side in one n x width matrix, and dropping the NULs leaves the lines. JSON
text never holds a raw NUL (``json.dumps`` escapes it), so padding cannot eat text.
Floats are rounded as Python's ``round`` does (exactly: the product's rounding error
is recovered where it matters); the rare values whose text takes another form
(exponent notation, NaN, coarse floats) are done per value by Python itself.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence

import numpy as np

from netmon.flows.keys import FIRST_SIZES, KEY_DTYPE

CHUNK = 32_768  # rows rendered at once: bounds the matrix at ~20 MB
_ZERO = ord("0")
_NO_ROWS = np.zeros(0, dtype=np.intp)


def _block(rows: int, data: bytes) -> np.ndarray:
    """Constant text on every row."""
    return np.broadcast_to(np.frombuffer(data, np.uint8), (rows, len(data)))


def _texts(texts: Sequence[bytes]) -> np.ndarray:
    """Rows of text, NUL-padded to the longest."""
    arr = np.array(texts, dtype=bytes)
    width = max(arr.dtype.itemsize, 1)
    return arr.astype(f"S{width}").view(np.uint8).reshape(len(texts), width)


def _digits(values: np.ndarray) -> np.ndarray:
    """Non-negative integers as decimal digits, right-aligned, NUL-padded on the left."""
    top = int(values.max()) if len(values) else 0
    width = len(str(top))
    # Narrow integers divide several times faster than 64-bit ones.
    v = values.astype(np.uint32 if top < 2**32 else np.uint64)
    out = np.empty((width, len(v)), np.uint8)  # digit-major: each row one contiguous store
    for i in range(width - 1, 0, -1):
        q = v // 10
        out[i] = v - q * 10
        v = q
    out[0] = v
    keep = out[:-1] != 0  # leading zeros become padding (the last digit stays, for 0)
    for i in range(1, width - 1):
        keep[i] |= keep[i - 1]
    out += _ZERO
    out[:-1] *= keep
    return out.T


def _ints(values: np.ndarray) -> np.ndarray:
    """Integers (any sign) as JSON numbers."""
    neg = values < 0
    mag = _digits(np.abs(values.astype(np.int64)))
    if not neg.any():
        return mag
    sign = np.where(neg, ord("-"), 0).astype(np.uint8)[:, None]
    return np.concatenate([sign, mag], axis=1)


def _round_text(x: float, ndigits: int) -> bytes:
    return json.dumps(round(x, ndigits)).encode()


def _product_error(x: np.ndarray, scale: float, p: np.ndarray) -> np.ndarray:
    """x * scale - p exactly, for p = fl(x * scale) (Dekker's two-product)."""
    c = 134217729.0 * x  # Veltkamp split: 2**27 + 1
    hi = c - (c - x)
    lo = x - hi
    c = 134217729.0 * scale
    shi = c - (c - scale)
    slo = scale - shi
    return ((hi * shi - p) + hi * slo + lo * shi) + lo * slo


def _floats(values: np.ndarray, ndigits: int) -> np.ndarray:
    """``round(x, ndigits)`` as json.dumps writes it (Python's float repr)."""
    x = values.astype(np.float64)
    scale = 10.0 ** ndigits
    with np.errstate(invalid="ignore", over="ignore"):
        p = x * scale
        y = np.rint(p)
        # round() rounds the exact x * 10**n, half to even; p is that product rounded.
        # Only where p lands exactly on a half can the product's rounding error
        # decide the side (anywhere else it is smaller than p's distance to the half).
        err = _product_error(x, scale, p)
        tie = (np.abs(p - y) == 0.5) & (err != 0)
        y[tie] = p[tie] + np.copysign(0.5, err[tie])
        v = y / scale
        av = np.abs(v)
        # Per value, by Python: NaN and infinities, values whose fixed-point digits are
        # not exact (y beyond 2**52) or need fewer digits than shown (a coarse float),
        # and where repr switches to exponent notation.
        slow = ~np.isfinite(p) | ~np.isfinite(err) | (av >= 1e15) | \
            ((av < 1e-4) & (v != 0)) | (np.spacing(av) * scale >= 0.5)
    y[slow] = 0
    mag = y.astype(np.int64)
    neg = np.signbit(y) & ~slow
    mag = np.abs(mag)
    whole = _digits(mag // int(scale))
    frac = _digits(mag % int(scale) + int(scale))[:, 1:]  # zero-filled to ndigits
    # Trailing zeros go, but one digit stays ("68.0", as repr writes it).
    tail = np.zeros(len(x), bool)
    for i in range(ndigits - 1, 0, -1):
        tail |= frac[:, i] != _ZERO
        frac[~tail, i] = 0
    sign = np.where(neg, ord("-"), 0).astype(np.uint8)[:, None]
    out = np.concatenate([sign, whole, _block(len(x), b"."), frac], axis=1)
    if slow.any():
        idx = np.flatnonzero(slow)
        special = _texts([_round_text(float(x[i]), ndigits) for i in idx])
        width = max(out.shape[1], special.shape[1])
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])))
        out[idx] = 0
        out[idx, :special.shape[1]] = special
    return out


def _addresses(fam: np.ndarray, addr: np.ndarray) -> np.ndarray:
    """Addresses as text: IPv4 digit by digit in bulk, IPv6 through inet_ntop."""
    n = len(addr)
    octets = addr.view(np.uint8).reshape(n, 16)[:, 12:]
    digits = _digits(octets.reshape(-1))  # one call for the four octets of every row
    width = digits.shape[1]
    out = np.empty((n, 4, width + 1), np.uint8)
    out[:, :, :width] = digits.reshape(n, 4, width)
    out[:, :, width] = ord(".")
    out = out.reshape(n, 4 * (width + 1))[:, :-1]  # no dot after the last octet
    six = np.flatnonzero(fam != 4)
    if len(six):
        raw = addr.view(np.uint8).reshape(len(addr), 16)[six].tobytes()
        ntop = socket.inet_ntop
        text = _texts([ntop(socket.AF_INET6, raw[i:i + 16]).encode()
                       for i in range(0, len(raw), 16)])
        width = max(out.shape[1], text.shape[1])
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])))
        out[six] = 0
        out[six, :text.shape[1]] = text
    return out


def _vocabulary(codes: np.ndarray, words: dict[int, str]) -> np.ndarray:
    """A JSON string per row, from a few distinct ones (labels, reasons, observers)."""
    # Word and observer ids are small and non-negative: a presence table finds the
    # distinct ones without np.unique's sort (a third of this function's time).
    present = np.zeros(int(codes.max()) + 1, bool)
    present[codes] = True
    uniq = np.flatnonzero(present)
    table = _texts([json.dumps(words.get(int(c), "")).encode() for c in uniq])
    position = np.cumsum(present) - 1
    return table[position[codes]]


def _text_column(values: np.ndarray | None, named: np.ndarray) -> np.ndarray:
    """A JSON string per row from an object array of str; only the ``named`` rows
    are looked at (most flows have no names, and their text is a constant)."""
    n = len(named)
    idx = np.flatnonzero(named) if values is not None else _NO_ROWS
    if not len(idx):
        return _block(n, b'""')
    words: dict[str, int] = {}
    codes = [words.setdefault(v, len(words)) for v in values[idx].tolist()]
    table = _texts([json.dumps(v).encode() for v in words])
    width = max(table.shape[1], 2)
    out = np.zeros((n, width), np.uint8)
    out[:, :2] = np.frombuffer(b'""', np.uint8)
    out[idx] = 0
    out[idx, :table.shape[1]] = table[np.array(codes, dtype=np.intp)]
    return out



def _first_sizes(sizes: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``[s1,s2,...]``: the first ``count`` sizes of each row."""
    n = len(sizes)
    parts = [_block(n, b"[")]
    comma = np.uint8(ord(","))
    for j in range(sizes.shape[1]):
        keep = count > j
        if not keep.any():
            break
        cell = _ints(sizes[:, j])
        if j:
            cell = np.concatenate([np.where(keep, comma, 0).astype(np.uint8)[:, None], cell],
                                  axis=1)
        cell[~keep] = 0
        parts.append(cell)
    parts.append(_block(n, b"]"))
    return np.concatenate(parts, axis=1)


class PendingFlows:
    """Flows gathered until there are enough to render in bulk: one render costs
    ~2 ms however few its rows, as much as ~100 flows one by one, and ended flows
    often come a handful at a time (a listener's connections, a quiet capture)."""

    def __init__(self) -> None:
        self._parts: list[tuple[dict[str, np.ndarray], Sequence[bytes], np.ndarray,
                                np.ndarray]] = []
        self.rows = 0
        self._words: dict[str, int] = {}  # end reasons and cluster labels, numbered

    def _word(self, text: str) -> int:
        return self._words.setdefault(text, len(self._words))

    def add(self, cols: dict[str, np.ndarray], keys: Sequence[bytes], reason: str,
            labels: dict[int, str] | None = None) -> None:
        """Flows as :meth:`FlowTable.columns` gives them, their keys, why they ended
        and the cluster names of the moment."""
        if not len(keys):
            return
        labels = labels or {}
        cids, at = np.unique(cols["cluster"], return_inverse=True)
        names = np.array([self._word(labels.get(int(c), "")) for c in cids], np.int64)
        self._parts.append((cols, keys, np.full(len(keys), self._word(reason), np.int64),
                            names[at.reshape(-1)]))
        self.rows += len(keys)

    def render(self, observers: Sequence[str] = ()) -> Iterator[memoryview]:
        """The JSON lines of every flow added since the last call, one ``\n``-ended
        line per flow, a few MB at a time (joined, 4 M flows would cost a second of
        copying); ``observers``: the table's observation point names."""
        parts, self._parts, self.rows = self._parts, [], 0
        words = {i: w for w, i in self._words.items()}
        for cols, keys, reasons, labels in _chunks(parts):
            yield _render_chunk(cols, keys, reasons, labels, words, observers)


def _chunks(parts: Sequence[tuple[dict[str, np.ndarray], Sequence[bytes], np.ndarray,
                                  np.ndarray]]
            ) -> Iterator[tuple[dict[str, np.ndarray], Sequence[bytes], np.ndarray,
                                np.ndarray]]:
    """The parts regrouped into CHUNK rows: small parts are joined, large ones sliced
    (joining every part first copied all the columns once more, 3% of the time)."""
    group: list = []
    rows = 0
    for part in parts:
        n = len(part[1])
        if group and rows + n > CHUNK:
            yield _joined(group)
            group, rows = [], 0
        if n <= CHUNK:
            group.append(part)
            rows += n
            continue
        for start in range(0, n, CHUNK):
            cut = slice(start, start + CHUNK)
            yield ({k: v[cut] for k, v in part[0].items()}, part[1][cut], part[2][cut],
                   part[3][cut])
    if group:
        yield _joined(group)


def _joined(group: list) -> tuple[dict[str, np.ndarray], Sequence[bytes], np.ndarray,
                                  np.ndarray]:
    if len(group) == 1:
        return group[0]
    return ({k: np.concatenate([p[0][k] for p in group]) for k in group[0][0]},
            [k for p in group for k in p[1]], np.concatenate([p[2] for p in group]),
            np.concatenate([p[3] for p in group]))


def render(cols: dict[str, np.ndarray], keys: Sequence[bytes], reason: str,
           labels: dict[int, str] | None = None, observers: Sequence[str] = ()
           ) -> Iterator[memoryview]:
    """The JSON lines of one batch of flows (see :class:`PendingFlows`)."""
    pending = PendingFlows()
    pending.add(cols, keys, reason, labels)
    return pending.render(observers)


def _render_chunk(cols: dict[str, np.ndarray], keys: Sequence[bytes], reasons: np.ndarray,
                  labels: np.ndarray, words: dict[int, str], observers: Sequence[str]
                  ) -> memoryview:
    n = len(keys)
    if not n:
        return memoryview(b"")
    k = np.frombuffer(b"".join(keys), dtype=KEY_DTYPE)
    alo = cols["a_is_lo"].astype(bool)
    fam = k["f"]
    addr_a = _addresses(fam, np.where(alo, k["a"], k["b"]))
    addr_b = _addresses(fam, np.where(alo, k["b"], k["a"]))
    exported = cols["exported"] if "exported" in cols else np.zeros(n, bool)
    tunnel = cols["tunnel"] if "tunnel" in cols else np.zeros(n, bool)
    booleans = _texts([b"false", b"true"])
    npk = cols["pkts_a2b"] + cols["pkts_b2a"]
    count = np.where(exported, 0, np.minimum(npk, FIRST_SIZES))
    cid = cols["cluster"].astype(np.int64)
    clustered = cid >= 0
    cluster_id = _ints(np.where(clustered, cid, 0))
    null = _block(n, b"null")
    width = max(cluster_id.shape[1], 4)
    cluster_id = np.pad(cluster_id, ((0, 0), (0, width - cluster_id.shape[1])))
    cluster_id[~clustered] = np.pad(null, ((0, 0), (0, width - 4)))[~clustered]
    obs = k["o"].astype(np.int64)
    names = dict(enumerate(observers))
    fields: list[tuple[str, np.ndarray]] = [
        ("flow_id", _ints(cols["flow_id"])), ("proto", _ints(k["p"])),
        ("addr_a", addr_a), ("port_a", _ints(np.where(alo, k["ap"], k["bp"]))),
        ("addr_b", addr_b), ("port_b", _ints(np.where(alo, k["bp"], k["ap"]))),
        ("pkts_a2b", _ints(cols["pkts_a2b"])), ("bytes_a2b", _ints(cols["bytes_a2b"])),
        ("pkts_b2a", _ints(cols["pkts_b2a"])), ("bytes_b2a", _ints(cols["bytes_b2a"])),
        ("first_epoch", _floats(cols["first"], 6)), ("last_epoch", _floats(cols["last"], 6)),
        ("syn", _ints(cols["syn"])), ("synack", _ints(cols["synack"])),
        ("fin", _ints(cols["fin"])), ("rst", _ints(cols["rst"])), ("psh", _ints(cols["psh"])),
        ("size_mean", _floats(cols["size_mean"], 3)), ("size_std", _floats(cols["size_std"], 3)),
        ("iat_mean", _floats(cols["iat_mean"], 6)), ("iat_std", _floats(cols["iat_std"], 6)),
        ("first_sizes", _first_sizes(cols["first_sizes"], count)),
        ("end_reason", _vocabulary(reasons, words)),
        ("cluster_id", cluster_id),
        ("cluster_label", _vocabulary(labels, words)),
        ("outlier", _floats(cols["outlier"], 3)),
        ("observer", _vocabulary(obs, names)),
        ("exported", booleans[exported.astype(np.intp)]),
        ("tunnel", booleans[tunnel.astype(np.intp)]),
    ]
    named = cols["named"] if "named" in cols else np.zeros(n, bool)
    for field in ("server_name", "name_source", "app", "ja4", "ja3", "software", "process",
                  "pid", "user", "container", "peer_process"):
        if field == "pid":
            fields.append(("pid", _ints(cols["pid"] if "pid" in cols else np.zeros(n, int))))
        else:
            fields.append((field, _text_column(cols.get(field), named)))
    # One row template holds the constant text; each field's block is stored into its
    # slot (as wide as the field's longest value in this chunk), and the NULs go.
    template = bytearray()
    slots = []
    for i, (name, block) in enumerate(fields):
        quote = name.startswith("addr_")  # addresses are strings, built without quotes
        template += (b"{" if i == 0 else b",") + f'"{name}":'.encode() + (b'"' if quote
                                                                         else b"")
        slots.append((len(template), block))
        template += bytes(block.shape[1]) + (b'"' if quote else b"")
    template += b"}\n"
    rows = np.empty((n, len(template)), np.uint8)
    rows[:] = np.frombuffer(bytes(template), np.uint8)
    for at, block in slots:
        rows[:, at:at + block.shape[1]] = block
    flat = rows.reshape(-1)
    # A boolean mask drops the NULs at twice the speed of tobytes().translate, and
    # the result goes to os.write as it is (no copy into a bytes object).
    return memoryview(flat[flat != 0])
