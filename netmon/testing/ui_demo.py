"""Run the TUI on a made-up network: ``python -m netmon.testing.ui_demo [--flows N]``.

For trying the screens, themes and keys without capture rights or a capture file
(and for terminal tests of the UI alone). Main thread: the app; a feed thread
publishes a snapshot every tick; the fake engine link answers on its own thread.
"""

from __future__ import annotations

import argparse
import sys

from netmon.testing.fake_engine import FakeLink, make_world
from netmon.ui.app import make_app
from netmon.ui.feed import FixedFeed
from netmon.ui.themes import DEFAULT_THEME, THEME_ORDER


class DemoSettings:
    """The few settings the UI reads (netmon.core.settings.Settings would load Twisted)."""

    def __init__(self, theme: str, tick: float) -> None:
        self.theme = theme
        self.tick = tick


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netmon.testing.ui_demo", description=__doc__)
    p.add_argument("--flows", type=int, default=2000)
    p.add_argument("--clusters", type=int, default=12)
    p.add_argument("--tick", type=float, default=0.5)
    p.add_argument("--theme", default=DEFAULT_THEME, help=", ".join(THEME_ORDER))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    world = make_world(args.flows, args.clusters, tick=args.tick)
    feed = FixedFeed(world.snapshots(600), interval=args.tick, loop=True)
    app = make_app(DemoSettings(args.theme, args.tick), feed,  # type: ignore[arg-type]
                   FakeLink(world, threaded=True))
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
