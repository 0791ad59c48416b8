"""netmon's flow filter language, and capture filters (BPF) for flows.

Pure module (numpy only); whichever thread calls it does the work (the reactor thread
in netmon, where the flow table's columns live).

The language, a small relative of tcpdump's, names flows, not packets::

    host 10.0.0.1            either endpoint is this address (IPv4 or IPv6)
    port 443 | port https    either endpoint has this port
    proto tcp|udp|icmp|icmpv6|N   (``tcp``, ``udp``, ``icmp``, ``icmpv6`` alone too)
    cluster 3                the flow is in display cluster 3
    at web1                  seen at an observation point whose name holds "web1"
                             (a source: "ssh web1:eth0", or "exporter 10.0.0.1")
    name ~ reddit            the flow's server name holds "reddit" (any case); also
                             app, ja4, ja3, software, process, user, container
    name = www.reddit.com    ... is exactly this (any case); ``name reddit`` means ~
    not X, X and Y, X or Y, ( ... )    also !, &&, ||; two terms side by side mean "and"

``and`` binds tighter than ``or``; keywords are case-insensitive. :func:`compile_filter`
turns a text into a :class:`Filter` or raises :class:`FilterError`, whose message is one
line naming the bad token. :meth:`Filter.mask` evaluates a filter over the flow table's
columns at once (hosts through their 64-bit address digests), and :meth:`Filter.to_bpf`
writes the libpcap equivalent. :func:`bpf_for_flows` builds a capture filter matching a
set of flows: exactly (an OR of bidirectional 5-tuples) when there are few, otherwise a
summary by protocol and server port or server host, which matches a superset.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from netmon.core.values import PROTO_ICMP, PROTO_ICMPV6, PROTO_NAMES, PROTO_TCP, PROTO_UDP, FlowView
from netmon.flows.keys import address_digest

#: Flow-table columns a filter reads (FlowTable attribute names, one row per flow).
FILTER_COLUMNS = ("host_lo", "host_hi", "port_lo", "port_hi", "proto", "cluster", "obs")
#: Filter words over names -> the NameColumns id column each reads (given to
#: :meth:`Filter.mask` as "name_<column>", with the NameColumns itself as "names").
TEXT_WORDS = {"name": "name", "app": "app", "ja4": "ja4", "ja3": "ja3",
              "software": "software", "process": "process", "user": "user",
              "container": "container"}
_TEXT_TERM = re.compile(r"^(" + "|".join(TEXT_WORDS) + r")(~|==?)(.*)$", re.I)

_PROTO_WORDS = {name.lower(): num for num, name in PROTO_NAMES.items()}
_PROTO_WORDS["icmp6"] = PROTO_ICMPV6
_BARE_PROTOS = ("tcp", "udp", "icmp", "icmpv6", "icmp6")
_BPF_PROTO = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmp6"}
_TOKEN = re.compile(r"\s*(?:(\(|\)|&&|\|\||!)|([^\s()!&|]+|[&|]))")
_EXPECTED = ("host, port, proto, cluster, at, name, app, process, ja4, tcp, udp, icmp, "
             "icmpv6, not or '('")


class FilterError(ValueError):
    """A filter text that does not parse; ``str()`` is one line naming the bad token."""


# --------------------------------------------------------------------------- syntax tree
class _Node(ABC):
    @abstractmethod
    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which rows of ``cols`` match."""

    @abstractmethod
    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        """The same condition as a libpcap filter."""


@dataclass(frozen=True)
class _Host(_Node):
    text: str
    digest: np.uint64

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return (cols["host_lo"] == self.digest) | (cols["host_hi"] == self.digest)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return f"host {self.text}"


@dataclass(frozen=True)
class _Port(_Node):
    port: int

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return (cols["port_lo"] == self.port) | (cols["port_hi"] == self.port)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return f"port {self.port}"


@dataclass(frozen=True)
class _Proto(_Node):
    proto: int

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return cols["proto"] == self.proto

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return proto_bpf(self.proto)


@dataclass(frozen=True)
class _Cluster(_Node):
    cluster: int

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return cols["cluster"] == self.cluster

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        if cluster_bpf is None:
            raise FilterError(f"'cluster {self.cluster}' has no capture-filter equivalent")
        return f"({cluster_bpf(self.cluster)})"


@dataclass(frozen=True)
class _At(_Node):
    name: str  # part of an observation point's name, lower case

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        names = cols.get("observers", ())
        ids = [i for i, n in enumerate(names) if self.name in str(n).lower()]
        return np.isin(cols["obs"], ids)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        raise FilterError(f"'at {self.name}' has no capture-filter equivalent")


@dataclass(frozen=True)
class _Text(_Node):
    word: str  # a TEXT_WORDS key
    exact: bool  # "=": the whole text; "~": a part of it (both ignore case)
    value: str  # lower case

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        names = cols.get("names")
        column = cols.get(f"name_{TEXT_WORDS[self.word]}")
        if names is None or column is None:  # no names known: nothing matches
            return np.zeros(len(cols["proto"]), dtype=np.bool_)
        v = self.value
        ids = names.ids_where((lambda s: s.lower() == v) if self.exact
                              else (lambda s: v in s.lower()))
        return np.isin(column, ids)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        raise FilterError(f"'{self.word}' has no capture-filter equivalent "
                          "(names are not in packet headers)")


@dataclass(frozen=True)
class _Not(_Node):
    arg: _Node

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return ~self.arg.mask(cols)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return f"not ({self.arg.bpf(cluster_bpf)})"


@dataclass(frozen=True)
class _Both(_Node):
    op: str  # "and" / "or"
    left: _Node
    right: _Node

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        a, b = self.left.mask(cols), self.right.mask(cols)
        return a & b if self.op == "and" else a | b

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return f"({self.left.bpf(cluster_bpf)} {self.op} {self.right.bpf(cluster_bpf)})"


class _All(_Node):
    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.ones(len(cols["proto"]), dtype=np.bool_)

    def bpf(self, cluster_bpf: Callable[[int], str] | None) -> str:
        return ""


@dataclass(frozen=True)
class Filter:
    """A compiled filter: evaluate it over flow columns or turn it into BPF."""

    text: str
    _root: _Node

    @property
    def empty(self) -> bool:
        """True for the empty filter, which matches every flow."""
        return isinstance(self._root, _All)

    def mask(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which rows match: ``cols`` maps each name in FILTER_COLUMNS to one value
        per flow (FlowTable's columns, whole or gathered for some slots), and
        "observers" to the table's observation point names (for ``at``)."""
        return np.asarray(self._root.mask(cols), dtype=np.bool_)

    def to_bpf(self, cluster_bpf: Callable[[int], str] | None = None) -> str:
        """The libpcap capture filter for the same flows ("" for the empty filter).

        ``cluster N`` needs ``cluster_bpf(N)`` (e.g. :func:`bpf_for_flows` of the
        cluster's flows); without it FilterError says so. IP fragments after the first
        carry no ports, so a port test in BPF misses them.
        """
        return self._root.bpf(cluster_bpf)


# --------------------------------------------------------------------------- parsing
def compile_filter(text: str) -> Filter:
    """Parse ``text``; raise FilterError (one line, naming the bad token)."""
    tokens = _tokenize(text)
    if not tokens:
        return Filter(text, _All())
    parser = _Parser(text, tokens)
    root = parser.parse_or()
    if parser.i < len(tokens):  # parse_or stops early only at an unmatched ')'
        raise FilterError(f"unexpected ')' at column {tokens[parser.i][1]} (no '(' to close)")
    return Filter(text, root)


def _tokenize(text: str) -> list[tuple[str, int]]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - every character matches one branch
            raise FilterError(f"cannot read the filter at column {pos + 1}")
        word = m.group(1) or m.group(2)
        tokens.append((word, m.start(1 if m.group(1) else 2) + 1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, int]]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    def _peek(self) -> str | None:
        return self.tokens[self.i][0].lower() if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse_or(self) -> _Node:
        node = self.parse_and()
        while self._peek() in ("or", "||"):
            self._take()
            node = _Both("or", node, self.parse_and())
        return node

    def parse_and(self) -> _Node:
        node = self.parse_unary()
        while True:
            word = self._peek()
            if word in ("and", "&&"):
                self._take()
            elif word is None or word in ("or", "||", ")"):
                return node
            # Anything else starts another term: side by side means "and".
            node = _Both("and", node, self.parse_unary())

    def parse_unary(self) -> _Node:
        word = self._peek()
        if word is None:
            raise FilterError(f"the filter ends after {self.tokens[-1][0]!r} "
                              f"(expected {_EXPECTED})")
        tok, col = self._take()
        if word in ("and", "or", "&&", "||", ")"):
            raise FilterError(f"unexpected {tok!r} at column {col} (expected {_EXPECTED})")
        if word in ("not", "!"):
            return _Not(self.parse_unary())
        if word == "(":
            node = self.parse_or()
            if self._peek() != ")":
                raise FilterError(f"'(' at column {col} is never closed")
            self._take()
            return node
        if word in ("host", "port", "proto", "cluster", "at"):
            if self._peek() is None or self._peek() in ("(", ")", "&&", "||", "!"):
                raise FilterError(f"{word!r} at column {col} needs a value")
            value, vcol = self._take()
            return _primitive(word, value, vcol)
        if word in _BARE_PROTOS:
            return _Proto(_PROTO_WORDS[word])
        if word in TEXT_WORDS or _TEXT_TERM.match(word):
            return self._text(tok, col)
        raise FilterError(f"unknown word {tok!r} at column {col} (expected {_EXPECTED})")


    def _text(self, tok: str, col: int) -> _Text:
        """``name ~ x``, ``name = x``, ``name x``, also written without spaces."""
        m = _TEXT_TERM.match(tok)
        word, op, value = (m.group(1).lower(), m.group(2), m.group(3)) if m else \
            (tok.lower(), "", "")
        if not op and self._peek() in ("~", "=", "=="):
            op = self._take()[0]
        elif not op and self._peek() and self._peek()[0] in "~=":
            nxt = self._take()[0]  # "~reddit" or "=x": the operator glued to the value
            op, value = ("~", nxt[1:]) if nxt[0] == "~" else ("=", nxt.lstrip("="))
        if not value:
            if self._peek() is None or self._peek() in ("(", ")", "&&", "||", "!"):
                raise FilterError(f"{word!r} at column {col} needs a value "
                                  f"(e.g. {word} ~ text)")
            value = self._take()[0]
        return _Text(word, op in ("=", "=="), value.lower())


def _primitive(kind: str, value: str, col: int) -> _Node:
    if kind == "at":
        return _At(value.lower())
    if kind == "host":
        return _host(value, col)
    if kind == "port":
        return _Port(_port(value, col))
    if kind == "proto":
        low = value.lower()
        if low in _PROTO_WORDS:
            return _Proto(_PROTO_WORDS[low])
        if value.isdigit() and int(value) <= 255:
            return _Proto(int(value))
        raise FilterError(f"unknown protocol {value!r} at column {col} "
                          "(tcp, udp, icmp, icmpv6 or a number 0-255)")
    if value.isdigit():
        return _Cluster(int(value))
    raise FilterError(f"'cluster' needs a cluster number, got {value!r} at column {col}")


def _host(value: str, col: int) -> _Host:
    try:
        addr = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise FilterError(f"{value!r} at column {col} is not an IP address "
                          "(host names are not looked up)") from None
    packed = addr.packed if addr.version == 6 else bytes(12) + addr.packed
    digest = address_digest(np.frombuffer(packed, dtype=np.uint8).reshape(1, 16))[0]
    return _Host(str(addr), digest)


def _port(value: str, col: int) -> int:
    if value.isdigit():
        port = int(value)
        if port <= 65535:
            return port
        raise FilterError(f"port {value} at column {col} is out of range (0-65535)")
    for proto in ("tcp", "udp"):
        try:
            return socket.getservbyname(value.lower(), proto)
        except OSError:
            continue
    raise FilterError(f"unknown port {value!r} at column {col} (a number or a service name)")


# --------------------------------------------------------------------------- BPF
def proto_bpf(proto: int) -> str:
    """The BPF primitive for an IP protocol number."""
    return _BPF_PROTO.get(proto) or f"(ip proto {proto} or ip6 proto {proto})"


#: bpf_for_flows limits: flows written out exactly, terms in a summary, hosts per term.
MAX_EXACT = 32
MAX_TERMS = 24
MAX_HOSTS = 8


def _ported(proto: int) -> bool:
    return proto in (PROTO_TCP, PROTO_UDP)


def _exact(f: FlowView) -> str:
    p = proto_bpf(f.proto)
    if not _ported(f.proto):
        hosts = sorted({f.addr_a, f.addr_b})
        return f"({p} and " + " and ".join(f"host {h}" for h in hosts) + ")"
    a2b = f"src host {f.addr_a} and src port {f.port_a} and dst host {f.addr_b} and " \
          f"dst port {f.port_b}"
    b2a = f"src host {f.addr_b} and src port {f.port_b} and dst host {f.addr_a} and " \
          f"dst port {f.port_a}"
    return f"({p} and (({a2b}) or ({b2a})))"


def _hosts(hosts: set[str]) -> str:
    ordered = sorted(hosts)
    if len(ordered) == 1:
        return f"host {ordered[0]}"
    return "(" + " or ".join(f"host {h}" for h in ordered) + ")"


def bpf_for_flows(flows: Sequence[FlowView], *, max_exact: int = MAX_EXACT,
                  max_terms: int = MAX_TERMS, max_hosts: int = MAX_HOSTS) -> str:
    """A libpcap capture filter for ``flows`` (raise ValueError when there are none).

    Up to ``max_exact`` flows: exactly those flows, both directions of each 5-tuple
    (the address pair for protocols without ports). More: a summary matching a superset,
    the first of these that needs at most ``max_terms`` terms: per protocol and server
    port (with the servers' addresses when at most ``max_hosts``), per protocol and
    server host, per protocol. The server is each flow's responder (``b``).
    """
    if not flows:
        raise ValueError("no flows to build a capture filter for")
    if len(flows) <= max_exact:
        return " or ".join(sorted({_exact(f) for f in flows}))
    by_port: dict[tuple[int, int], set[str]] = {}
    by_host: dict[tuple[int, str], None] = {}
    for f in flows:
        by_port.setdefault((f.proto, f.port_b if _ported(f.proto) else -1), set()).add(f.addr_b)
        by_host[(f.proto, f.addr_b)] = None
    if len(by_port) <= max_terms:
        terms = []
        for (proto, port), servers in sorted(by_port.items()):
            parts = [proto_bpf(proto)]
            if port >= 0:
                parts.append(f"port {port}")
            if len(servers) <= max_hosts:
                parts.append(_hosts(servers))
            terms.append("(" + " and ".join(parts) + ")")
        return " or ".join(terms)
    if len(by_host) <= max_terms:
        return " or ".join(f"({proto_bpf(p)} and host {h})" for p, h in sorted(by_host))
    return " or ".join(proto_bpf(p) for p in sorted({f.proto for f in flows}))
