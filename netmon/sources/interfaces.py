"""``netmon interfaces``: the capture interfaces, and whether this user can capture on
each right now. Main thread only, before anything else starts.

The list comes from tshark through pyshark (its discovery is what finds tshark in
the first place); each interface is then opened briefly by ``dumpcap -L`` (list link
types), which fails exactly when a capture would: no permission, or not there.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netmon.core.errors import EXIT_NO_TOOL, SourceError
from netmon.core.text import NAME_MAX, print_line, safe_text


def default_interface(route_file: str = "/proc/net/route") -> str:
    """The interface of the IPv4 default route, or "" when there is none."""
    try:
        with open(route_file) as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[1] == "00000000" and parts[2] != "00000000":
                    return parts[0]
            fh.seek(0)
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) > 1 and parts[1] == "00000000":
                    return parts[0]
    except OSError:
        pass
    return ""


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    status: str  # "can capture", "no permission", "unavailable: <why>"
    default_route: bool


def interface_names() -> list[str]:
    """Capture interfaces as tshark lists them (via pyshark)."""
    from pyshark.tshark.tshark import TSharkNotFoundException, get_tshark_interfaces

    try:
        return list(get_tshark_interfaces())
    except TSharkNotFoundException:
        raise SourceError("tshark not found: install it with 'sudo apt-get install -y tshark'",
                          EXIT_NO_TOOL) from None


def probe(name: str, dumpcap: str) -> str:
    """Whether a capture on ``name`` would start now."""
    try:
        proc = subprocess.run([dumpcap, "-i", name, "-L"], capture_output=True, text=True,
                              timeout=10)
    except subprocess.TimeoutExpired:
        return "unavailable: no answer"
    if proc.returncode == 0:
        return "can capture"
    err = proc.stderr.lower()
    if "permission" in err or "not permitted" in err:
        return "no permission"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("dumpcap:")]
    return "unavailable" + (f": {safe_text(lines[0][9:], 60)}" if lines else "")


def list_interfaces() -> list[InterfaceInfo]:
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        raise SourceError("dumpcap not found: install it with 'sudo apt-get install -y tshark'",
                          EXIT_NO_TOOL)
    names = interface_names()
    default = default_interface()
    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(lambda n: probe(n, dumpcap), names))
    return [InterfaceInfo(n, s, n == default) for n, s in zip(names, states, strict=True)]


def print_interfaces() -> int:
    infos = list_interfaces()
    # Names and dumpcap's complaints come from outside: inert and capped.
    names = [safe_text(i.name, NAME_MAX) for i in infos]
    width = max((len(n) for n in names), default=4)
    for name, info in zip(names, infos, strict=True):
        mark = "  (default route)" if info.default_route else ""
        print_line(f"{name:<{width}}  {info.status}{mark}")
    if infos and not any(i.status == "can capture" for i in infos):
        print_line("no interface can be captured by this user: run as root, or see "
                   "'Capture without root' in the README")
    return 0
