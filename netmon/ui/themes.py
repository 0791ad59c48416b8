"""netmon's colour themes and the cluster palette every theme defines.

Pure data plus two small look-ups; used on the UI thread. Widgets never name a colour:
they use Textual's theme variables (``$primary``, ``$panel``, ...) in CSS, and the
cluster colours come from each theme's ``cluster-0`` .. ``cluster-7`` variables, so the
table's ID column and the chart's lines agree in every theme. ``netmon-ansi`` uses the
terminal's own 16 colours and default background (right for 16-colour terminals and
for users whose palettes are tuned); ``NO_COLOR`` is honoured by Textual itself.
"""

from __future__ import annotations

from rich.color import Color as RichColor
from textual.color import Color
from textual.theme import Theme

#: How many colours a cluster palette has; cluster ``n`` uses colour ``n % PALETTE_SIZE``.
PALETTE_SIZE = 8

DEFAULT_THEME = "netmon-dark"


def _palette(*colours: str) -> dict[str, str]:
    assert len(colours) == PALETTE_SIZE
    return {f"cluster-{i}": c for i, c in enumerate(colours)}


NETMON_THEMES: tuple[Theme, ...] = (
    Theme(
        name="netmon-dark",
        primary="#4ea1ff", secondary="#87afd7", accent="#ffaf5f",
        warning="#ffd75f", error="#ff5f5f", success="#87d787",
        foreground="#d0d4da", background="#16181d", surface="#1b1e24", panel="#262a33",
        dark=True,
        variables={
            **_palette("#4ea1ff", "#ff9e3d", "#6fd16f", "#ff6b8b",
                       "#b48cff", "#3fd0d0", "#e6d35a", "#c8a27c"),
            "footer-key-foreground": "#ffaf5f",
        },
    ),
    Theme(
        name="netmon-light",
        primary="#0969da", secondary="#57606a", accent="#bc4c00",
        warning="#9a6700", error="#cf222e", success="#1a7f37",
        foreground="#1f2328", background="#f6f8fa", surface="#ffffff", panel="#e4e8ee",
        dark=False,
        variables={
            **_palette("#0a60c9", "#c75a00", "#1a7f37", "#cf2257",
                       "#7a3fd1", "#0a7f86", "#8a7300", "#6e4a2a"),
            "footer-key-foreground": "#0969da",
        },
    ),
    Theme(
        name="netmon-contrast",
        primary="#00d7ff", secondary="#ffffff", accent="#ffff00",
        warning="#ffff00", error="#ff3030", success="#00ff5f",
        foreground="#ffffff", background="#000000", surface="#000000", panel="#303030",
        dark=True, luminosity_spread=0.0, text_alpha=1.0,
        variables={
            **_palette("#00d7ff", "#ffaf00", "#00ff5f", "#ff5fff",
                       "#ffff00", "#ff3030", "#afafff", "#ffffff"),
            "block-cursor-background": "#ffff00",
            "block-cursor-foreground": "#000000",
            "block-cursor-blurred-background": "#606060",
            "block-cursor-blurred-foreground": "#ffffff",
            "text-muted": "#d0d0d0",
            "footer-key-foreground": "#ffff00",
        },
    ),
    Theme(
        name="netmon-ansi",
        ansi=True,
        primary="ansi_blue", secondary="ansi_cyan", accent="ansi_yellow",
        warning="ansi_yellow", error="ansi_red", success="ansi_green",
        foreground="ansi_default", background="ansi_default", surface="ansi_default",
        panel="ansi_default", boost="ansi_default",
        dark=True,
        variables={
            **_palette("ansi_bright_blue", "ansi_bright_yellow", "ansi_bright_green",
                       "ansi_bright_magenta", "ansi_bright_cyan", "ansi_bright_red",
                       "ansi_yellow", "ansi_white"),
            "block-cursor-background": "ansi_blue",
            "block-cursor-foreground": "ansi_bright_white",
            "block-cursor-blurred-background": "ansi_bright_black",
            "block-cursor-blurred-foreground": "ansi_bright_white",
            "text-muted": "ansi_white",
            "footer-key-foreground": "ansi_bright_yellow",
            "border-blurred": "ansi_bright_black",
            "ansi-background": "ansi_black",
            "ansi-foreground": "ansi_white",
        },
    ),
)

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
