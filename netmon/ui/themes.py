"""netmon's colour themes and the cluster palette every theme defines.

The themes themselves are data: ``themes/*.toml`` at the top of the source tree
(installed to ``<prefix>/share/netmon/themes``), plus any the user drops into
``$XDG_CONFIG_HOME/netmon/themes``; this module loads them. Used on the UI thread.
Widgets never name a colour: they use Textual's theme variables (``$primary``,
``$panel``, ...) in CSS, and the cluster colours come from each theme's ``cluster-0``
.. ``cluster-7`` variables, so the table's ID column and the chart's lines agree in
every theme. ``netmon-ansi`` uses the terminal's own 16 colours and default
background (right for 16-colour terminals and for tuned palettes); ``NO_COLOR`` is
honoured by Textual itself.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from rich.color import Color as RichColor
from textual.color import Color
from textual.theme import Theme

#: How many colours a cluster palette has; cluster ``n`` uses colour ``n % PALETTE_SIZE``.
PALETTE_SIZE = 8

DEFAULT_THEME = "netmon-dark"


def theme_dirs() -> list[Path]:
    """Folders searched for ``*.toml`` theme files, later ones winning by name: the
    ``themes/`` folder of this source tree, the installed copy
    (``<prefix>/share/netmon/themes``), then the user's own
    (``$XDG_CONFIG_HOME/netmon/themes``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".config")
    return [Path(__file__).resolve().parents[2] / "themes",
            Path(sys.prefix) / "share" / "netmon" / "themes",
            Path(config) / "netmon" / "themes"]


def load_theme(path: Path) -> tuple[int, Theme]:
    """One theme file -> (its place in the ``t`` cycle, the Textual Theme).

    A theme file holds Textual's Theme fields (``name``, ``primary``, ``background``,
    ``dark``, ...), an ``order``, and a ``[variables]`` table that must define the
    cluster palette ``cluster-0`` .. ``cluster-7``. Raises ValueError saying what is
    wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    order = data.pop("order", 1000)
    variables = data.get("variables", {})
    missing = [f"cluster-{i}" for i in range(PALETTE_SIZE) if f"cluster-{i}" not in variables]
    if missing or "name" not in data or "primary" not in data:
        what = ", ".join(missing) or "name and primary"
        raise ValueError(f"{path}: missing {what}")
    try:
        return int(order), Theme(**data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_themes(dirs: list[Path] | None = None) -> tuple[tuple[Theme, ...], list[str]]:
    """Every theme found, in cycle order, and one line per file that could not load."""
    found: dict[str, tuple[int, Theme]] = {}
    problems: list[str] = []
    for directory in theme_dirs() if dirs is None else dirs:
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            try:
                order, theme = load_theme(path)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            found[theme.name] = (order, theme)
    themes = tuple(t for _, t in sorted(found.values(), key=lambda ot: (ot[0], ot[1].name)))
    return themes, problems


NETMON_THEMES, THEME_PROBLEMS = load_themes()
if DEFAULT_THEME not in {t.name for t in NETMON_THEMES}:  # a broken install
    NETMON_THEMES = (Theme(name=DEFAULT_THEME, primary="#4ea1ff", dark=True,
                           variables={f"cluster-{i}": c for i, c in enumerate(
                               ("#4ea1ff", "#ff9e3d", "#6fd16f", "#ff6b8b",
                                "#b48cff", "#3fd0d0", "#e6d35a", "#c8a27c"))}),
                     *NETMON_THEMES)

#: The order ``t`` cycles through.
THEME_ORDER: tuple[str, ...] = tuple(t.name for t in NETMON_THEMES)

_FALLBACK = NETMON_THEMES[0].variables


def cluster_colors(theme: Theme) -> list[Color]:
    """The theme's cluster palette (netmon-dark's for themes that have none)."""
    out = []
    for i in range(PALETTE_SIZE):
        name = f"cluster-{i}"
        out.append(Color.parse(theme.variables.get(name, _FALLBACK[name])))
    return out


def rich_color(color: Color) -> RichColor:
    """A palette colour for Rich text (ANSI colours stay ANSI)."""
    return color.rich_color


def plotext_color(color: Color) -> int | tuple[int, int, int]:
    """A palette colour as plotext wants it: an ANSI index, or an RGB triple."""
    if color.ansi is not None and color.ansi >= 0:
        return color.ansi
    return color.rgb


def next_theme(current: str) -> str:
    """The theme after ``current`` in :data:`THEME_ORDER` (wrapping round)."""
    if current not in THEME_ORDER:
        return THEME_ORDER[0]
    return THEME_ORDER[(THEME_ORDER.index(current) + 1) % len(THEME_ORDER)]
