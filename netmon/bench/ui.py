"""UI benchmark: what one tick costs the UI thread, and how fast a key changes the screen.

``python -m netmon.bench.ui [--flows 100000] [--clusters 50] [--size 160x50]``

The parent process opens a pseudo-terminal of the given size and runs a child in it,
so Textual draws through its real Linux driver (escape sequences encoded and written,
as over SSH); the parent drains the terminal and prints the child's numbers. The
child runs the real app on a feed that publishes a snapshot with ``--clusters``
clusters every tick from its own thread, and a fake engine link that answers flow
queries over ``--flows`` live flows from another thread (sorting a page there, as the
engine does). Measured on the UI (main) thread only:

* CPU per tick: ``time.thread_time()`` of the UI thread over a window, divided by the
  snapshots it handled (includes message handling, chart rebuilds, painting and
  output), on the main screen and on a cluster's flow list.
* the slowest single tick: snapshot handler plus the repaint that follows it.
* key latency: from the key event to the first repaint that shows its effect, for
  moving the cursor, sorting, opening a cluster's flows (page answered by the engine
  thread), opening a flow's packets, going back and pausing.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import inspect
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_TICK_MS = 50.0
TARGET_KEY_MS = 100.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m netmon.bench ui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flows", type=int, default=100_000, help="live flows (100000)")
    p.add_argument("--clusters", type=int, default=50, help="clusters per snapshot (50)")
    p.add_argument("--size", default="160x50", help="terminal COLSxROWS (160x50)")
    p.add_argument("--tick", type=float, default=0.5, help="seconds between snapshots (0.5)")
    p.add_argument("--seconds", type=float, default=8.0,
                   help="length of each measuring window (8)")
    p.add_argument("--runs", type=int, default=5,
                   help="runs, each in a fresh process; medians and max reported (5)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result-fd", type=int, default=-1, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------- parent
def run_in_pty(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the child in a pseudo-terminal of ``args.size``; return its numbers."""
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    read_end, write_end = os.pipe()
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "netmon.bench.ui", "--child", "--result-fd", str(write_end),
         *argv],
        stdin=slave, stdout=slave, stderr=slave, pass_fds=(write_end,), env=env,
        start_new_session=True)
    os.close(slave)
    os.close(write_end)
    written = [0]

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            written[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with os.fdopen(read_end) as fh:
        raw = fh.read()
    child.wait(timeout=60)
    os.close(master)
    if not raw:
        raise SystemExit(f"bench child failed (exit {child.returncode})")
    result = json.loads(raw)
    result["terminal_bytes"] = written[0]
    return result


# ---------------------------------------------------------------------- child
class Probe:
    """Timestamps of the UI thread's handlers and repaints (installed by wrapping)."""

    def __init__(self) -> None:
        self.snapshots = 0
        self.tick_ms: list[float] = []
        self.last_paint = 0.0
        self._pending = 0.0  # handler time waiting for its repaint

    def wrap_handler(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.snapshots += 1
                self._pending += time.perf_counter() - t0

        return timed

    def wrap_paint(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                t1 = time.perf_counter()
                self.last_paint = t1
                if self._pending:
                    self.tick_ms.append((self._pending + t1 - t0) * 1000)
                    self._pending = 0.0

        return timed


def child_main(args: argparse.Namespace) -> int:
    from textual.screen import Screen

    from netmon.core.settings import Settings
    from netmon.testing.fake_engine import FakeLink, make_world
    from netmon.ui import FixedFeed, NetmonApp
    from netmon.ui.screens import FlowScreen, FlowsScreen, MainScreen
    from netmon.ui.screens.sort_menu import SortMenu
    from netmon.ui.widgets import ClusterTable, FlowsTable, PacketsTable

    world = make_world(args.flows, args.clusters, tick=args.tick)
    snapshots = world.snapshots(120, first=241)
    # The fake engine keeps its flows as ~10^6 Python objects (the real one keeps numpy
    # columns); without this, a full garbage collection walking them lands on the UI
    # thread now and then (~70 ms) and measures the fake rather than the UI.
    gc.collect()
    gc.freeze()
    feed = FixedFeed(snapshots, interval=args.tick, loop=True)
    link = FakeLink(world, threaded=True)
    probe = Probe()

    class BenchApp(NetmonApp):
        # Textual finds a relative CSS_PATH beside the subclass's module, not NetmonApp's.
        CSS_PATH = Path(inspect.getfile(NetmonApp)).with_name(NetmonApp.CSS_PATH)
        on_snapshot_published = probe.wrap_handler(NetmonApp.on_snapshot_published)

    app = BenchApp(Settings(tick=args.tick), feed, link)
    original_paint = Screen._compositor_refresh
    Screen._compositor_refresh = probe.wrap_paint(original_paint)  # type: ignore[method-assign]
    results: dict[str, Any] = {"flows": len(world.flows), "clusters": args.clusters,
                               "size": args.size, "tick_s": args.tick}

    async def window(name: str) -> None:
        probe.tick_ms.clear()
        n0, c0 = probe.snapshots, time.thread_time()
        await asyncio.sleep(args.seconds)
        cpu = time.thread_time() - c0
        handled = max(probe.snapshots - n0, 1)
        ticks = sorted(probe.tick_ms) or [0.0]
        results[name] = {
            "cpu_ms_per_tick": round(cpu * 1000 / handled, 2),
            "ui_cpu_share": round(cpu / args.seconds, 3),
            "ticks": handled,
            "slowest_tick_ms": round(ticks[-1], 2),
            "median_tick_ms": round(ticks[len(ticks) // 2], 2),
        }

    def rows(kind: type, table: type) -> int:
        """Rows in the current screen's ``table`` if the screen is a ``kind`` (0 while
        it is still being built)."""
        screen = app.screen
        if not isinstance(screen, kind):
            return 0
        found = screen.query(table)
        return found.first().row_count if found else 0

    async def key(name: str, keys: list[str], done: Callable[[], bool]) -> None:
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        for k in keys:
            app.simulate_key(k)
        deadline = t0 + 5
        while not done() and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
        seen = time.perf_counter()
        while probe.last_paint < seen and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
        results.setdefault("keys_ms", {})[name] = round((probe.last_paint - t0) * 1000, 1)

    async def bench() -> None:
        try:
            await asyncio.sleep(2.0)  # warm up: first snapshots, first chart
            await window("main_screen")
            table = app.screen.query_one(ClusterTable)
            start = table.cursor
            await key("down (cursor)", ["down"], lambda: table.cursor != start)
            order = table.keys
            await key("s (sort clusters)", ["s"], lambda: table.keys != order)
            await key("enter (cluster -> flows)", ["enter"],
                      lambda: rows(FlowsScreen, FlowsTable) > 0)
            await window("flows_screen")
            asked = len(link.requests)
            await key("s (sort flows)", ["s"],
                      lambda: len(link.requests) > asked and not app.screen.refresher.in_flight)
            await key("end (last of all flows)", ["end"],
                      lambda: app.screen.query_spec.offset > 0
                      and not app.screen.refresher.in_flight)
            await key("home (first flow)", ["home"],
                      lambda: app.screen.query_spec.offset == 0
                      and not app.screen.refresher.in_flight)
            await key("enter (flow -> packets)", ["enter"],
                      lambda: rows(FlowScreen, PacketsTable) > 0)
            await key("escape (back)", ["escape"], lambda: isinstance(app.screen, FlowsScreen))
            await key("escape (to main)", ["escape"], lambda: isinstance(app.screen, MainScreen))
            await key("f6 (sort menu)", ["f6"], lambda: isinstance(app.screen, SortMenu))
            await key("escape (menu closed)", ["escape"],
                      lambda: isinstance(app.screen, MainScreen))
            await key("p (pause)", ["p"], lambda: app.view.paused)
            await key("p (resume)", ["p"], lambda: not app.view.paused)
        except Exception as exc:  # report it: the child's terminal is not seen
            results["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            app.exit()

    def start_bench() -> None:
        app.run_worker(bench(), group="bench", description="UI benchmark",
                       exit_on_error=True)

    app.call_later(start_bench)
    app.run()
    Screen._compositor_refresh = original_paint  # type: ignore[method-assign]
    with os.fdopen(args.result_fd, "w") as out:
        json.dump(results, out)
    return 0


# ---------------------------------------------------------------------- report
def report(result: dict[str, Any]) -> str:
    lines = [f"netmon UI benchmark: {result['flows']:,} live flows, {result['clusters']} "
             f"clusters, {result['size']} terminal, a snapshot every {result['tick_s']} s"]
    worst_tick = 0.0
    for name in ("main_screen", "flows_screen"):
        w = result.get(name)
        if w is None:
            continue
        worst_tick = max(worst_tick, w["cpu_ms_per_tick"])
        lines.append(f"  {name:<13} UI-thread CPU {w['cpu_ms_per_tick']:6.1f} ms/tick "
                     f"({w['ui_cpu_share'] * 100:4.1f}% of a core; {w['ticks']} ticks); "
                     f"tick handler+repaint median {w['median_tick_ms']:.1f} ms, "
                     f"slowest {w['slowest_tick_ms']:.1f} ms")
    keys = result.get("keys_ms", {})
    most = result.get("keys_ms_max", keys)
    runs = result.get("runs", 1)
    for name, ms in keys.items():
        lines.append(f"  key {name:<28} {ms:6.1f} ms to the screen"
                     + (f" (median of {runs}; slowest {most[name]:.1f})" if runs > 1 else ""))
    worst_key = max(most.values(), default=0.0)
    lines.append(f"  terminal output: {result['terminal_bytes'] / 1024:.0f} KiB in all")
    if result.get("error"):
        lines.append(f"  benchmark stopped early: {result['error']}")
    ok_tick = "ok" if worst_tick <= TARGET_TICK_MS else "OVER"
    ok_key = "ok" if worst_key <= TARGET_KEY_MS else "OVER"
    lines.append(f"  target tick <= {TARGET_TICK_MS:.0f} ms: {worst_tick:.1f} ms {ok_tick}; "
                 f"key <= {TARGET_KEY_MS:.0f} ms: {worst_key:.1f} ms {ok_key}")
    return "\n".join(lines)


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' numbers as one: per window and per key the median, with the
    slowest run's figure beside it (``*_max``)."""
    out = dict(runs[0])
    out["runs"] = len(runs)
    for name in ("main_screen", "flows_screen"):
        ws = [r[name] for r in runs if name in r]
        if ws:
            out[name] = {**ws[0],
                         "cpu_ms_per_tick": statistics.median(w["cpu_ms_per_tick"] for w in ws),
                         "cpu_ms_per_tick_max": max(w["cpu_ms_per_tick"] for w in ws),
                         "median_tick_ms": statistics.median(w["median_tick_ms"] for w in ws),
                         "slowest_tick_ms": max(w["slowest_tick_ms"] for w in ws)}
    keys: dict[str, list[float]] = {}
    for r in runs:
        for k, ms in r.get("keys_ms", {}).items():
            keys.setdefault(k, []).append(ms)
    out["keys_ms"] = {k: statistics.median(v) for k, v in keys.items()}
    out["keys_ms_max"] = {k: max(v) for k, v in keys.items()}
    out["terminal_bytes"] = int(statistics.median(r["terminal_bytes"] for r in runs))
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        out["error"] = errors[0]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    child_argv = [a for a in argv if a != "--json"]
    result = combine([run_in_pty(args, child_argv) for _ in range(max(args.runs, 1))])
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
