"""Theme files: the four shipped ones load, a user's own theme joins the cycle, and a
broken file is reported, not fatal."""

from __future__ import annotations

from pathlib import Path

from netmon.ui.themes import PALETTE_SIZE, load_themes, theme_dirs

SHIPPED = Path(__file__).resolve().parent.parent / "themes"


def test_shipped_themes_load_in_cycle_order() -> None:
    themes, problems = load_themes([SHIPPED])
    assert problems == []
    assert [t.name for t in themes] == ["netmon-dark", "netmon-light", "netmon-contrast",
                                        "netmon-ansi"]
    for t in themes:
        assert all(f"cluster-{i}" in t.variables for i in range(PALETTE_SIZE))
    assert SHIPPED in theme_dirs()


def test_user_theme_joins_and_overrides(tmp_path: Path) -> None:
    palette = "\n".join(f'cluster-{i} = "#10{i}0{i}0"' for i in range(PALETTE_SIZE))
    (tmp_path / "mine.toml").write_text(
        f'name = "mine"\norder = 9\nprimary = "#ff00ff"\ndark = true\n[variables]\n{palette}\n')
    (tmp_path / "dark.toml").write_text(
        f'name = "netmon-dark"\norder = 1\nprimary = "#123456"\n[variables]\n{palette}\n')
    themes, problems = load_themes([SHIPPED, tmp_path])
    assert problems == []
    names = [t.name for t in themes]
    assert names[-1] == "mine" and names.count("netmon-dark") == 1
    assert next(t for t in themes if t.name == "netmon-dark").primary == "#123456"


def test_broken_theme_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    (tmp_path / "nopalette.toml").write_text('name = "x"\nprimary = "#fff"\n')
    (tmp_path / "wrongfield.toml").write_text(
        'name = "y"\nprimary = "#fff"\ncolour = 3\n[variables]\n'
        + "\n".join(f'cluster-{i} = "#fff"' for i in range(PALETTE_SIZE)) + "\n")
    themes, problems = load_themes([tmp_path])
    assert themes == ()
    assert len(problems) == 3
    assert any("cluster-0" in p for p in problems)
    assert any("colour" in p for p in problems)
