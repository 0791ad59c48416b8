"""Settings: every knob netmon has, layered defaults < config file < NETMON_* environment
< flags.

Pure module, used on the main thread before anything starts. Each field documents
itself; ``Settings.from_env`` reads ``NETMON_<FIELD>`` (upper case) so a server's
environment can set defaults that command-line flags still override.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

from netmon.core.errors import EXIT_USAGE, SourceError
from netmon.core.text import NAME_MAX, safe_text


@dataclass(frozen=True)
class Settings:
    """Everything a run of netmon is configured by."""

    read: str = ""
    """Capture file to replay, or "-" for a pcap stream on standard input."""
    interface: str = ""
    """Interface to capture on live; empty = the default-route interface."""
    bpf: str = ""
    """libpcap capture filter for live capture (e.g. "tcp port 443")."""
    speed: float = 0.0
    """Replay pacing: 1.0 = capture timing, 2.0 = twice as fast; 0 = as fast as possible."""
    capture_tool: str = "auto"
    """"auto" (dumpcap, else tshark), "dumpcap", "tshark", or a path to either."""
    headless: bool = False
    """No TUI: print a one-line summary each second on stderr."""
    json: bool = False
    """Print one JSON snapshot per tick on stdout (implies headless)."""
    flows_out: str = ""
    """Write every flow seen as JSON Lines to this path when netmon exits."""
    duration: float = 0.0
    """Stop after this many seconds (0 = run until the input ends or you quit)."""
    count: int = 0
    """Stop after this many packets (0 = no limit)."""
    tick: float = 0.5
    """Seconds between snapshots (flow expiry, clustering, screen updates)."""
    idle_timeout: float = 60.0
    """A flow with no packet for this many seconds (capture time) ends."""
    active_timeout: float = 1800.0
    """A flow older than this many seconds ends and restarts (NetFlow-style)."""
    max_flows: int = 500_000
    """Hard cap on live flows; above it the least recently seen flows are evicted."""
    keep_ended: int = 200_000
    """Ended flows kept for lists, filters and flow screens (the newest; 0: none)."""
    top_flows: int = 10
    """How many of the largest live flows each snapshot carries."""
    log_level: str = "warning"
    """debug, info, warning or error. Logs go to stderr when headless, and to
    $XDG_STATE_HOME/netmon/netmon.log while the screen is up (never onto it)."""
    include_ssh: bool = False
    """Live capture over SSH: also capture this SSH session's own packets."""
    theme: str = "netmon-dark"
    """Colour theme of the TUI: netmon-dark, netmon-light, netmon-contrast, netmon-ansi."""
    cluster: bool = True
    """Group flows into behaviour clusters (off: counting only)."""
    no_ports: bool = False
    """Cluster on behaviour alone: server ports are not a feature."""
    seed: int = 0
    """Seed of the clusterer's sampling: the same input gives the same clusters."""
    reproducible: bool = False
    """Replays: cluster at every tick of capture time and wait for it, so a file gives
    the same clusters on any machine (slower: the clusterer sets the pace)."""
    listen: tuple[str, ...] = ()
    """Listen for TCP connections on these [HOST:]PORT addresses (HOST 127.0.0.1 unless
    given; "0.0.0.0" or "[::]" for every interface) and record each connection as a
    flow. Not combined with -r or -i (a capture would count the same connections
    twice); fine with --ssh and --collect."""
    listen_max_conns: int = 1000
    """Open listener connections at once, all ports together; more are refused."""
    listen_max_per_source: int = 50
    """Open listener connections at once from one source address; more are refused."""
    listen_idle_timeout: float = 30.0
    """A listener connection that sends nothing for this many seconds is closed."""
    listen_max_bytes: int = 1_000_000
    """A listener connection that sends more than this many bytes is closed."""
    listen_max_lifetime: float = 300.0
    """A listener connection open longer than this many seconds is closed."""
    ssh: tuple[str, ...] = ()
    """Capture on remote hosts over SSH, each [USER@]HOST[:IFACE] (IFACE "any" unless
    given): the host's own dumpcap, else tcpdump, streams pcap back. Its SSH session's
    own packets are left out unless include_ssh. -f applies there too."""
    ssh_options: tuple[str, ...] = ()
    """Extra ssh -o options for every SSH host, e.g. "Port=2222" or
    "IdentityFile=~/.ssh/netmon" (ssh also reads ~/.ssh/config as usual)."""
    collect: tuple[str, ...] = ()
    """Receive NetFlow v5, v9 and IPFIX export on these UDP [HOST:]PORT addresses (HOST
    127.0.0.1 unless given; 0.0.0.0 to hear routers; 2055 is the usual port)."""

    packet_mb: int = 128
    """MB for the packet store: every flow's first 32 and most recent 32 packets (up to
    2048 bytes of each), for packet lists and dissection (0: none)."""
    keep_packets: str = ""
    """Keep every captured frame on disk in this directory (made 0700 if missing), as
    rotating pcapng segments with an index, so any flow's packets can be read back."""
    keep_size: int = 1 << 30
    """Size cap of the --keep-packets directory in bytes; flags, variables and the
    config file also take 500M, 2G, 1.5G (K, M, G, T: powers of 1024)."""

    def validated(self) -> Settings:
        """Return self, or raise SourceError(EXIT_USAGE) naming the bad value."""
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not limit.holds(value):
                raise SourceError(f"invalid setting {name.replace('_', '-')} = {value!r} "
                                  f"({describe_limit(name, type(value))})", EXIT_USAGE)
        checks = [
            (self.log_level.lower() in ("debug", "info", "warning", "error"),
             "log-level must be debug, info, warning or error"),
            (not (self.read and self.interface), "use either -r FILE or -i IFACE, not both"),
            (not (self.read and self.bpf), "-f filters live capture; for files use tshark -Y"),
            (not (self.listen and (self.read or self.interface)),
             "--listen is a source of its own: not with -r or -i (a capture would count the "
             "listener's connections a second time)"),
            (not (self.listen and ((self.bpf and not self.ssh) or self.count)),
             "-f and -c apply to captures; with --listen use --duration"),
            (not (self.read and (self.ssh or self.collect)),
             "-r replays a file: not with --ssh or --collect, which watch the present"),
        ]
        for ok, message in checks:
            if not ok:
                raise SourceError(f"invalid setting: {message}", EXIT_USAGE)
        for spec in self.listen:
            parse_listen(spec)
        for spec in self.collect:
            parse_listen(spec, "--collect")
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Defaults overridden by NETMON_* variables (bad values name the variable)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("NETMON_" + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = parse_setting(f.name, raw)
            except ValueError as exc:
                raise SourceError(f"invalid value '{safe_text(raw, NAME_MAX)}' for "
                                  f"NETMON_{f.name.upper()} ({exc})", EXIT_USAGE) from None
        return cls(**values)

    def with_file(self, path: str | Path) -> Settings:
        """These settings overridden by a TOML config file (keys = field names, with
        dashes or underscores). A missing file is fine; a bad key or value is a
        SourceError naming it."""
        path = Path(path)
        shown = safe_text(path, NAME_MAX)  # names and values quoted back: inert, capped
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read config file {shown}: {exc}", EXIT_USAGE) from None
        except tomllib.TOMLDecodeError as exc:
            raise SourceError(f"config file {shown}: {exc}", EXIT_USAGE) from None
        known = {f.name for f in fields(self)}
        for key in data:  # a misspelt key first: it may explain a bad value
            if key.replace("-", "_") not in known:
                raise SourceError(f"config file {shown}: unknown key "
                                  f"'{safe_text(key, NAME_MAX)}' (the README lists the keys)",
                                  EXIT_USAGE)
        values = {key.replace("-", "_"): _from_toml(key.replace("-", "_"), value,
                                                    f"{key} in {shown}")
                  for key, value in data.items()}
        return replace(self, **values)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given (flag) values replacing these."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class Limit(NamedTuple):
    """The accepted range of a numeric setting (``above``: ``low`` itself is not)."""

    low: float
    high: float
    above: bool = False

    def holds(self, value: float) -> bool:
        # NaN fails every comparison, and infinity is above every high: both refused.
        return (self.low < value if self.above else self.low <= value) and value <= self.high

    def describe(self, kind: type) -> str:
        low, high = _number(self.low), _number(self.high)
        if kind is int:
            return f"a whole number from {low} to {high}"
        if self.above:
            return f"a number above {low}, at most {high}"
        return f"a number from {low} to {high}"


def _number(x: float) -> str:
    """1e8 as 100_000_000 (a form flags, variables and TOML all accept)."""
    return f"{x:_.0f}" if float(x).is_integer() else f"{x:g}"


_LONG = 100_000_000  # seconds (3 years): longer than any run, short of float trouble
#: Every numeric setting's accepted range, checked wherever a value comes in (flag,
#: config file, NETMON_* variable) so a bad one stops netmon before anything starts.
LIMITS: dict[str, Limit] = {
    "speed": Limit(0, 1000),
    "duration": Limit(0, _LONG),
    "count": Limit(0, 2**31 - 1),  # dumpcap's -c takes no more
    "tick": Limit(0.05, 60),
    "idle_timeout": Limit(0, _LONG, above=True),
    "active_timeout": Limit(0, _LONG, above=True),
    "max_flows": Limit(1, 100_000_000),  # ~35 GB of flow table
    "keep_ended": Limit(0, 100_000_000),  # ~300 bytes a flow, as live ones
    "top_flows": Limit(0, 1000),
    "seed": Limit(0, 2**32 - 1),  # what numpy and scikit-learn take as a seed
    "listen_max_conns": Limit(1, 1_000_000),
    "listen_max_per_source": Limit(1, 1_000_000),
    "listen_idle_timeout": Limit(0, _LONG, above=True),
    "listen_max_bytes": Limit(1, 10**15),
    "listen_max_lifetime": Limit(0, _LONG, above=True),
    "packet_mb": Limit(0, 65536),
    "keep_size": Limit(16 << 20, 1 << 50),
}
#: Settings in bytes, written with a unit: "1G", "500M", "1.5G".
SIZE_SETTINGS = ("keep_size",)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(raw: str) -> int:
    """"1.5G" -> bytes (K, M, G, T are powers of 1024; an optional B and "iB" are
    allowed); ValueError when it is not such a size."""
    text = raw.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = float(text[:len(text) - len(unit)])  # ValueError for junk
    if not number >= 0 or number == float("inf"):
        raise ValueError(raw)
    return int(number * _UNITS[unit])


def _size_text(n: float) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{int(n) // _UNITS[unit]}{unit}"
    return f"{int(n)}"


def describe_limit(name: str, kind: type) -> str:
    """What a setting accepts, in words (sizes with their units)."""
    limit = LIMITS[name]
    if name in SIZE_SETTINGS:
        return (f"a size such as 500M, 2G or 1.5G, from {_size_text(limit.low)} to "
                f"{_size_text(limit.high)}: {limit.describe(kind)} bytes")
    return limit.describe(kind)


def parse_setting(name: str, raw: str) -> object:
    """A setting's value from text (a flag or NETMON_* variable); ValueError says what
    is accepted."""
    kind = type(getattr(Settings, name))
    limit = LIMITS.get(name)
    if kind is tuple:  # a comma-separated list
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("true or false")
    if kind is str:
        return raw
    try:
        value = parse_size(raw) if name in SIZE_SETTINGS else kind(raw)
    except ValueError:
        value = None
    if value is None or (limit is not None and not limit.holds(value)):
        raise ValueError(describe_limit(name, kind) if limit else f"a {kind.__name__}")
    return value


def _from_toml(name: str, value: object, origin: str) -> object:
    """A TOML value checked against the field's type (whole numbers do for floats) and
    range."""
    kind = type(getattr(Settings, name))
    limit = LIMITS.get(name)
    if name in SIZE_SETTINGS and isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError:
            pass  # refused below as a string where a size belongs
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if ok and limit is not None:
        ok = limit.holds(value)  # type: ignore[arg-type]
    if not ok:
        want = describe_limit(name, kind) if limit else {
            bool: "true or false", float: "a number", int: "a whole number",
            tuple: "a list of strings"}.get(kind, "a string")
        # repr: the value's TOML type matters here ("1" is not 1)
        raise SourceError(f"invalid value {safe_text(repr(value), NAME_MAX)} for {origin} "
                          f"({want})", EXIT_USAGE)
    return tuple(value) if kind is tuple else kind(value)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """$NETMON_CONFIG, else $XDG_CONFIG_HOME/netmon/config.toml."""
    env = os.environ if environ is None else environ
    if env.get("NETMON_CONFIG"):
        return Path(env["NETMON_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "netmon" / "config.toml"


def load_settings(environ: Mapping[str, str] | None = None,
                  config: str | Path | None = None) -> Settings:
    """Defaults < config file < NETMON_* environment (the CLI puts flags on top)."""
    env = os.environ if environ is None else environ
    if config is not None and not Path(config).is_file():
        raise SourceError(f"config file {safe_text(config, NAME_MAX)}: no such file",
                          EXIT_USAGE)
    from_file = Settings().with_file(config or config_path(env))
    from_env = Settings.from_env(dict(env))
    changed = {f.name: getattr(from_env, f.name) for f in fields(Settings)
               if f"NETMON_{f.name.upper()}" in env}
    return replace(from_file, **changed)


def parse_listen(spec: str, option: str = "--listen") -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port). HOST is an IP address (IPv6 in brackets) or
    "localhost"; without one, 127.0.0.1: every interface must be asked for."""
    text = spec.strip()
    shown = f"'{safe_text(spec, NAME_MAX)}'"  # quoted back in errors: inert and capped
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SourceError(f"invalid {option} {shown}: write an IPv6 address in brackets, "
                          "e.g. [::1]:8080", EXIT_USAGE)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(port_text)
    except ValueError:
        raise SourceError(f"invalid {option} {shown}: the port must be a number from 0 to "
                          "65535", EXIT_USAGE) from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SourceError(f"invalid {option} {shown}: HOST must be an IP address such as "
                          "127.0.0.1, 0.0.0.0 or [::]", EXIT_USAGE) from None
    return host, port
