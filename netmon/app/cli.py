"""Command line: argv -> Settings -> sources -> engine -> headless output.

Runs on the main thread. Every error a user can cause ends here as one line on
stderr and a distinct exit code (see ``netmon.core.errors``); programming errors
are not swallowed. Every line printed goes through ``netmon.core.text``, so names
and values from outside never reach the terminal as escape sequences.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from collections.abc import Callable
from typing import TextIO

from netmon import __version__
from netmon.core.errors import EXIT_BAD_INPUT, EXIT_USAGE, SourceError
from netmon.core.settings import Settings, load_settings, parse_listen, parse_setting
from netmon.core.text import NAME_MAX, SafeFormatter, print_line, safe_text
from netmon.sources.base import Source
from netmon.sources.capture import CaptureSpec, LiveCapture, kill_leftovers
from netmon.sources.files import FileSource, StdinSource
from netmon.sources.interfaces import default_interface

EXAMPLES = """\
examples:
  netmon --headless                      live capture on the default-route interface
  netmon --headless -i eth0 -f 'tcp port 443'
  netmon --headless -r trace.pcap --flows-out flows.jsonl
  netmon --json -r trace.pcapng --speed 2 | jq .pkt_rate
  ssh host sudo tcpdump -U -w - 'not port 22' | netmon --headless -r -
  netmon --headless --listen 8080 --listen 0.0.0.0:2222   record TCP connections
  netmon --ssh root@web1:eth0 --ssh web2    capture on two servers over SSH
  netmon --collect 0.0.0.0:2055              collect NetFlow/IPFIX from routers
  netmon interfaces                      list capture interfaces
  netmon demo                            loopback traffic of several kinds, monitored
  netmon --keep-packets /var/tmp/ring --keep-size 2G   keep every frame on disk
  netmon packets /var/tmp/ring --host 10.0.0.5 --port 443 -w out.pcapng
  netmon packets /var/tmp/ring --cluster 3 -w cluster3.pcapng

exit codes: 0 ok, 1 internal error (a bug), 2 usage, 3 no tshark/dumpcap,
  4 no capture permission, 5 unknown interface, 6 bad capture filter, 7 unreadable or
  damaged input,
  8 cannot listen (port in use or privileged), 9 capture failed,
  10 ssh login refused or host key unknown;
  143/129 after SIGTERM/SIGHUP (flows are still written).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage dump
        # argparse quotes the bad value: its words plus one capped, inert value.
        raise SourceError(f"{safe_text(message, NAME_MAX + 100)} (see 'netmon --help')",
                          EXIT_USAGE)


def _setting(name: str) -> Callable[[str], object]:
    """An argparse type for a numeric setting: the error gives its accepted range."""
    def parse(text: str) -> object:
        try:
            return parse_setting(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"invalid value '{safe_text(text, NAME_MAX)}' ({exc})") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netmon", description="Live terminal monitor that groups network "
                "traffic into clusters of similar behaviour.", epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"netmon {__version__}")
    p.add_argument("--log-level", metavar="LEVEL",
                   help="debug, info, warning (default) or error")
    p.add_argument("--config", metavar="FILE", help="settings file (default: "
                   "$XDG_CONFIG_HOME/netmon/config.toml; keys as in the README)")
    src = p.add_argument_group("source (default: live capture on the default-route interface)")
    src.add_argument("-r", "--read", metavar="FILE", help="replay a pcap/pcapng file "
                     "(.gz too); '-' reads a pcap stream from standard input")
    src.add_argument("-i", "--interface", metavar="IFACE", help="capture live on IFACE")
    src.add_argument("-f", "--filter", dest="bpf", metavar="BPF",
                     help="capture filter for live capture (libpcap syntax)")
    src.add_argument("--include-ssh", action="store_true", default=None,
                     help="over SSH, also capture this session's own packets (excluded by "
                     "default: the screen updates would feed back into the data)")
    src.add_argument("--speed", type=_setting("speed"), metavar="X",
                     help="pace a replay at X times capture speed (default: as fast as "
                     "possible)")
    src.add_argument("--capture-tool", metavar="TOOL",
                     help="auto (default), dumpcap, tshark, or a path to one of them")
    out = p.add_argument_group("output")
    out.add_argument("--headless", action="store_true", default=None,
                     help="no screen: a one-line summary each second on stderr")
    out.add_argument("--theme", metavar="NAME", help="netmon-dark (default), netmon-light, "
                     "netmon-contrast, netmon-ansi (16 colours)")
    out.add_argument("--json", action="store_true", default=None,
                     help="one JSON snapshot per tick on stdout (implies --headless)")
    out.add_argument("--flows-out", metavar="PATH",
                     help="write every flow seen as JSON Lines to PATH on exit")
    out.add_argument("--keep-packets", metavar="DIR",
                     help="keep every captured frame in DIR as rotating pcapng segments "
                     "with an index (see 'netmon packets DIR')")
    out.add_argument("--keep-size", type=_setting("keep_size"), metavar="SIZE",
                     help="size cap of --keep-packets DIR, e.g. 500M, 2G, 1.5G (1G)")
    stop = p.add_argument_group("stopping")
    stop.add_argument("--duration", type=_setting("duration"), metavar="S",
                      help="stop after S seconds")
    stop.add_argument("-c", "--count", type=_setting("count"), metavar="N",
                      help="stop after N packets")
    lis = p.add_argument_group("listener (a source of its own: records every TCP connection)")
    lis.add_argument("--listen", action="append", metavar="[HOST:]PORT",
                     help="listen on PORT (repeatable); HOST is 127.0.0.1 unless given "
                     "(0.0.0.0 or [::] for every interface). Nothing is ever sent back")
    lis.add_argument("--listen-max-conns", type=_setting("listen_max_conns"), metavar="N",
                     help="open connections at once, all ports (1000); more are refused")
    lis.add_argument("--listen-max-per-source", type=_setting("listen_max_per_source"), metavar="N",
                     help="open connections at once per source address (50)")
    lis.add_argument("--listen-idle-timeout", type=_setting("listen_idle_timeout"), metavar="S",
                     help="close a connection silent this long (30)")
    lis.add_argument("--listen-max-bytes", type=_setting("listen_max_bytes"), metavar="N",
                     help="close a connection after N bytes received (1000000)")
    lis.add_argument("--listen-max-lifetime", type=_setting("listen_max_lifetime"), metavar="S",
                     help="close a connection open this long (300)")
    far = p.add_argument_group("other machines (sources of their own; combine freely)")
    far.add_argument("--ssh", action="append", metavar="[USER@]HOST[:IFACE]",
                     help="capture on HOST over SSH with its own dumpcap or tcpdump "
                     "(repeatable; IFACE 'any' unless given; key-based login, never a "
                     "password prompt; -f applies there)")
    far.add_argument("--ssh-option", action="append", metavar="OPT",
                     help="extra ssh -o option for every --ssh host, e.g. Port=2222 "
                     "(repeatable)")
    far.add_argument("--collect", action="append", nargs="?", const="127.0.0.1:2055",
                     metavar="[HOST:]PORT",
                     help="receive NetFlow v5/v9 and IPFIX on UDP (repeatable; "
                     "127.0.0.1:2055 when no value; 0.0.0.0:2055 to hear routers)")
    clu = p.add_argument_group("clustering")
    clu.add_argument("--no-ports", action="store_true", default=None,
                     help="cluster on behaviour alone (server ports are not a feature)")
    clu.add_argument("--no-cluster", dest="cluster", action="store_false", default=None,
                     help="count flows only, no clustering")
    clu.add_argument("--seed", type=_setting("seed"), metavar="N", help="clusterer seed (0)")
    clu.add_argument("--reproducible", action="store_true", default=None,
                     help="replays: cluster every tick of capture time and wait for it, "
                     "so a file gives the same clusters on any machine (slower)")
    tune = p.add_argument_group("flow table")
    tune.add_argument("--tick", type=_setting("tick"), metavar="S", help="snapshot interval (0.5)")
    tune.add_argument("--idle-timeout", type=_setting("idle_timeout"), metavar="S",
                      help="end flows idle this long (60)")
    tune.add_argument("--active-timeout", type=_setting("active_timeout"), metavar="S",
                      help="end and restart flows older than this (1800)")
    tune.add_argument("--max-flows", type=_setting("max_flows"), metavar="N",
                      help="cap on live flows; least recently seen are evicted (500000)")
    tune.add_argument("--keep-ended", type=_setting("keep_ended"), metavar="N",
                      help="ended flows kept for lists, filters and flow screens, the "
                      "newest first (200000; 0: none)")
    tune.add_argument("--packet-memory", dest="packet_mb", type=_setting("packet_mb"),
                      metavar="MB", help="memory for each flow's first and recent packets, "
                      "for packet lists and dissection (128; 0: none)")
    p.add_argument("command", nargs="?", choices=["interfaces", "demo", "packets"],
                   help="'interfaces': list capture interfaces and whether you can capture "
                   "on them; 'demo': generate several kinds of loopback traffic and "
                   "monitor it; 'packets DIR': list or export the flows kept by "
                   "--keep-packets DIR")
    p.add_argument("ring_dir", nargs="?", metavar="DIR", help=argparse.SUPPRESS)
    pk = p.add_argument_group("packets (netmon packets DIR [--flow ID ...] [-w OUT.pcapng])")
    pk.add_argument("--flow", action="append", type=int, metavar="ID",
                    help="a flow id from the listing (repeatable)")
    pk.add_argument("--cluster", dest="cluster_id", type=int, metavar="ID",
                    help="the flows netmon last put in this cluster (its id in the TUI)")
    pk.add_argument("--host", metavar="ADDR", help="flows with this address at either end")
    pk.add_argument("--port", type=int, metavar="N", help="flows with this port at either end")
    pk.add_argument("--run", metavar="RUN", help="a run of the listing (default: the "
                    "newest, or every run when listing)")
    pk.add_argument("-w", "--write", metavar="OUT", help="write the selected flows' packets "
                    "to OUT as one pcapng")
    return p


def settings_from_args(args: argparse.Namespace, environ: dict | None = None) -> Settings:
    base = load_settings(environ, args.config)
    # A source named on the command line replaces the configured ones.
    named = args.read or args.interface or args.listen or args.ssh or args.collect
    if named:
        base = base.with_overrides(
            read=args.read or "", interface=args.interface or "", listen=(), ssh=(),
            collect=(), bpf="" if (args.read or args.listen) and not args.bpf else None)
    return base.with_overrides(
        read=args.read, interface=args.interface, bpf=args.bpf, speed=args.speed,
        capture_tool=args.capture_tool, headless=args.headless, json=args.json,
        flows_out=args.flows_out, duration=args.duration, count=args.count, tick=args.tick,
        idle_timeout=args.idle_timeout, active_timeout=args.active_timeout,
        max_flows=args.max_flows, keep_ended=args.keep_ended, cluster=args.cluster,
        no_ports=args.no_ports, seed=args.seed,
        packet_mb=args.packet_mb,
        reproducible=args.reproducible, theme=args.theme, include_ssh=args.include_ssh,
        log_level=args.log_level,
        listen=tuple(args.listen) if args.listen else None,
        listen_max_conns=args.listen_max_conns,
        listen_max_per_source=args.listen_max_per_source,
        listen_idle_timeout=args.listen_idle_timeout, listen_max_bytes=args.listen_max_bytes,
        listen_max_lifetime=args.listen_max_lifetime,
        ssh=tuple(args.ssh) if args.ssh else None,
        ssh_options=tuple(args.ssh_option) if args.ssh_option else None,
        collect=tuple(args.collect) if args.collect else None,
        keep_packets=args.keep_packets, keep_size=args.keep_size,
    ).validated()


def build_sources(settings: Settings, err: TextIO = sys.stderr) -> list[Source]:
    """The sources ``settings`` ask for (raises SourceError with a one-line reason)."""
    if settings.ssh or settings.collect:
        return build_remote_sources(settings, err)
    if settings.listen:
        return [build_listener(settings, err)]
    if settings.read == "-":
        return [StdinSource(0)]
    if settings.read:
        return [FileSource(settings.read, speed=settings.speed or None)]
    iface = settings.interface
    if not iface:
        iface = default_interface() or "lo"
        print_line(f"netmon: capturing on {iface} (the default-route interface; "
                   "choose another with -i)", err)
    bpf, note = ssh_exclusion(settings.bpf, os.environ, settings.include_ssh)
    source = LiveCapture(CaptureSpec(iface, bpf, settings.count, settings.capture_tool))
    source.note = note
    return [source]


def build_remote_sources(settings: Settings, err: TextIO = sys.stderr) -> list[Source]:
    """SSH hosts and flow collectors, with the listener and a local capture when asked
    for too: many observation points in one view, each flow tagged with its own."""
    from netmon.sources.collector import CollectorSource
    from netmon.sources.ssh import SshCapture, parse_ssh_target

    sources: list[Source] = []
    targets = [parse_ssh_target(spec) for spec in settings.ssh]  # all checked first
    collect = [parse_listen(spec, "--collect") for spec in settings.collect]
    for target in targets:
        sources.append(SshCapture(target, bpf=settings.bpf, options=settings.ssh_options,
                                  exclude_ssh=not settings.include_ssh))
    for host, port in collect:
        source = CollectorSource(host, port)
        print_line(f"netmon: collecting NetFlow v5/v9 and IPFIX on "
                   f"{source.name.removeprefix('collect ')}", err)
        sources.append(source)
    if settings.listen:
        sources.append(build_listener(settings, err))
    if settings.interface:
        bpf, note = ssh_exclusion(settings.bpf, os.environ, settings.include_ssh)
        local = LiveCapture(CaptureSpec(settings.interface, bpf, 0, settings.capture_tool))
        local.note = note
        sources.append(local)
    return sources


def ssh_exclusion(bpf: str, environ: dict | os._Environ, include: bool) -> tuple[str, str]:
    """The capture filter without this SSH session's own packets, and a note saying so.

    Over SSH, every screen update netmon draws is itself traffic on the wire: left in,
    it would feed back into what is shown. SSH_CONNECTION is "client port server port".
    """
    parts = environ.get("SSH_CONNECTION", "").split()
    if include or len(parts) != 4 or not (parts[1].isdigit() and parts[3].isdigit()):
        return bpf, ""
    client, cport, server, sport = parts
    mine = f"host {client} and port {cport} and host {server} and port {sport}"
    combined = f"({bpf}) and not ({mine})" if bpf else f"not ({mine})"
    return combined, f"{client}:{cport} -> {server}:{sport}"


def build_listener(settings: Settings, err: TextIO = sys.stderr) -> Source:
    """The listener source, its ports bound now (so a taken port fails at once)."""
    from netmon.sources.listener import ListenerSource, ListenLimits

    limits = ListenLimits(max_connections=settings.listen_max_conns,
                          max_per_source=settings.listen_max_per_source,
                          idle_timeout=settings.listen_idle_timeout,
                          max_bytes=settings.listen_max_bytes,
                          max_lifetime=settings.listen_max_lifetime)
    source = ListenerSource([parse_listen(spec) for spec in settings.listen], limits)
    print_line(f"netmon: listening on {', '.join(source.addresses)} (TCP; nothing is sent "
               "back)", err)
    return source


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "packets":
        from netmon.app.packets import run_packets

        return run_packets(args, sys.stdout)
    if args.ring_dir is not None or any(getattr(args, k) is not None for k in (
            "flow", "cluster_id", "host", "port", "run", "write")):
        raise SourceError("DIR, --flow, --cluster, --host, --port, --run and -w go with "
                          "'netmon packets DIR' (see 'netmon --help')", EXIT_USAGE)
    settings = settings_from_args(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    if args.command == "interfaces":
        from netmon.sources.interfaces import print_interfaces

        return print_interfaces()
    if args.command == "demo":
        from netmon.demo.drivers import demo_sources

        sources = demo_sources(settings)
    else:
        sources = build_sources(settings)
    if not (settings.headless or settings.json):
        from netmon.app.tui import run_tui

        return run_tui(settings, sources)
    from netmon.app.headless import HeadlessRunner
    from netmon.engine.engine import Engine

    runner = HeadlessRunner(json_out=settings.json)
    try:
        # Headless, nothing can ask for a packet's dissection: keep no packets; and
        # only JSON shows hosts.
        engine = Engine(settings.with_overrides(packet_mb=0), sources, runner.publish,
                        hosts=settings.json)
    except OSError as exc:  # --flows-out in a missing or read-only directory
        raise SourceError(f"cannot write {safe_text(settings.flows_out, NAME_MAX)}: "
                          f"{exc.strerror}", EXIT_BAD_INPUT) from None
    final = runner.run(engine)
    code = engine.result.report(settings.flows_out, sys.stderr)
    if code is not None:
        return code
    if final is None:
        print_line("netmon: engine did not finish cleanly", sys.stderr)
        return 1
    return runner.signal_code or 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``netmon`` command."""
    log = logging.StreamHandler()  # stderr; a logged name or tool message stays inert
    log.setFormatter(SafeFormatter("netmon: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[log])
    atexit.register(kill_leftovers)
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except SourceError as exc:
        print_line(f"netmon: {exc.message}", sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        kill_leftovers()
        print_line("netmon: interrupted", sys.stderr)
        return 130
