"""Terminal safety: untrusted text never reaches a terminal as control characters.

First :func:`netmon.core.text.safe_text` (the one function that makes text inert) and
its log formatter; then a sweep of the real ``python -m netmon`` with hostile file
names, interfaces, hosts, addresses, config files, themes, filters and environment
values: stdout and stderr hold no control character but line ends, each error is one
line, and the exit code is the README's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon.core.text import LINE_MAX, SafeFormatter, safe_text
from netmon.sources.firstbytes import escape
from tests.conftest import ROOT, need_capture, netmon_cmd
from tests.test_cli import small_pcap

DANGEROUS = ["\x1b[2J", "\x1b]0;title\x07", "\x9b31m", "\r", "\n", "\x08", "\x00", "\x7f",
             "\u202e", "\u2066", "\u200b", "\u2028", "\ud800", "\ue000"]


@given(st.text())
def test_safe_text_leaves_only_printable_characters(text: str) -> None:
    out = safe_text(text)
    assert out.isprintable()
    for ch in out:
        assert unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn",
                                                            "Zl", "Zp", "Zs"))))
def test_safe_text_keeps_printable_text_as_is(text: str) -> None:
    assert safe_text(text) == text


def test_safe_text_shows_what_it_neutralised() -> None:
    for bad in DANGEROUS:
        out = safe_text(f"a{bad}b")
        assert out.startswith("a") and out.endswith("b") and out.isprintable()
    assert safe_text("\x1b[31mred") == "\\x1b[31mred"
    assert safe_text("rtl\u202eevil") == "rtl\\u202eevil"
    assert safe_text("tab\there\u00a0nbsp") == "tab here nbsp"
    assert safe_text("x" * 10, max_len=5) == "xxxx…"
    assert safe_text(42) == "42"




@given(st.binary(max_size=64))
def test_byte_previews_are_already_inert(data: bytes) -> None:
    # firstbytes.escape is the byte-exact preview of a payload, not a second safe_text:
    # its output is printable ASCII, which safe_text leaves as it is.
    preview = escape(data, limit=64)
    assert preview.isascii() and preview.isprintable() and safe_text(preview) == preview


def test_log_formatter_makes_messages_one_inert_line() -> None:
    fmt = SafeFormatter("netmon: %(levelname)s %(message)s")
    record = logging.LogRecord("netmon", logging.INFO, __file__, 1, "source %s failed",
                               (EVIL,), None)
    line = fmt.format(record)
    assert line.isprintable() and "\\x1b]0;PWNED\\x07" in line
    long = logging.LogRecord("netmon", logging.INFO, __file__, 1, "x" * 5000, None, None)
    assert len(fmt.format(long)) == LINE_MAX
    try:
        raise ValueError(EVIL)
    except ValueError:
        record = logging.LogRecord("netmon", logging.ERROR, __file__, 1, "bug", None,
                                   sys.exc_info())
    lines = fmt.format(record).split("\n")
    assert lines[0] == "netmon: ERROR bug" and lines[1].startswith("Traceback")
    assert all(ln.isprintable() for ln in lines)
    assert "ValueError: \\x1b]0;PWNED\\x07\\x1b[2J" in lines[-2]  # EVIL's newline ends it


# ------------------------------------------------------------------ the CLI, end to end
#: Everything a terminal could obey: OSC (retitle), CSI (clear), BEL, C1 CSI, a bidi
#: override, a carriage return and a newline that would forge a second line.
EVIL = "\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202e\rback\nFORGED line\x85"
#: How EVIL's escape sequences read once made inert (by safe_text, or by argparse's
#: repr before it).
SHOWN = "\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e"


def readme_exit_codes() -> dict[int, str]:
    """Exit code -> what the README's "Exit codes" paragraph says it means."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    para = text.split("### Exit codes", 1)[1].strip().split("\n\n", 1)[0].replace("\n", " ")
    return {int(code): what for code, what in re.findall(r"(?:^|, )(\d+) ([^,]+)", para)}


def assert_inert(proc: subprocess.CompletedProcess, code: int, meaning: str,
                 needle: str = "", shown: str = SHOWN) -> str:
    """Output holds no control character but line ends; stderr lines are netmon's
    own (EVIL's newline would start one with "FORGED"); the exit code means what the
    README says. Returns the last stderr line (the error, when there is one)."""
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")  # strict UTF-8
    for ch in out + err:
        assert ch == "\n" or ch.isprintable(), (repr(ch), err)
    assert proc.returncode == code, err
    assert meaning in readme_exit_codes()[code], (code, meaning)
    lines = [ln for ln in err.split("\n") if ln]
    assert all(ln.startswith("netmon") for ln in lines), err
    assert "Traceback" not in err
    last = lines[-1] if lines else ""
    if code:
        assert last.startswith("netmon: ") and needle in last, err
    if shown:
        assert shown in err, err
    return last


def netmon(*args: str | bytes, env: dict[str, str] | None = None,
           cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    environ["XDG_CONFIG_HOME"] = "/nonexistent"  # no config of the machine's own
    environ.update(env or {})
    return subprocess.run(netmon_cmd(*args), capture_output=True, timeout=60, env=environ,
                          cwd=cwd)


@pytest.fixture()
def evil_dir(tmp_path: Path) -> Path:
    """A good capture and a damaged one, both with hostile names."""
    small_pcap(tmp_path / f"good{EVIL}.pcap", packets=20)
    (tmp_path / f"bad{EVIL}.pcap").write_bytes(b"\x1b]0;PWNED\x07 not a capture at all")
    return tmp_path


def test_file_names(evil_dir: Path) -> None:
    good, bad = str(evil_dir / f"good{EVIL}.pcap"), str(evil_dir / f"bad{EVIL}.pcap")
    assert_inert(netmon("--headless", "-r", str(evil_dir / f"gone{EVIL}.pcap")), 7,
                 "unreadable", "no such file")
    last = assert_inert(netmon("--headless", "--no-cluster", "-r", good), 0, "ok")
    assert "finished" in last and "20 pkts" in last
    # Damaged: the error names the file; the engine's log line does too, inert.
    proc = netmon("--headless", "--log-level", "info", "-r", bad)
    assert_inert(proc, 7, "unreadable", "bad")
    assert "netmon: INFO " in proc.stderr.decode()
    # A name that is not even UTF-8: raw ESC, BEL and a C1 CSI byte.
    raw = os.fsencode(evil_dir) + b"/\x1b]0;PWNED\x07\x9b2J\xff.pcap"
    assert_inert(netmon("--headless", "-r", raw), 7, "unreadable", "no such file",
                 shown="\\x1b]0;PWNED\\x07\\udc9b2J\\udcff.pcap")
    # --flows-out into a hostile, missing directory.
    assert_inert(netmon("--headless", "-r", good, "--flows-out",
                        str(evil_dir / EVIL / "flows.jsonl")), 7, "unreadable",
                 "cannot write")


def test_json_keeps_the_name_exact_and_escaped(evil_dir: Path) -> None:
    good = str(evil_dir / f"good{EVIL}.pcap")
    proc = netmon("--json", "--no-cluster", "-r", good, "--theme", EVIL)
    assert_inert(proc, 0, "ok")
    snaps = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert snaps[-1]["sources"][0]["name"].startswith("file good\x1b]0;PWNED")


@pytest.mark.parametrize(("args", "needle"), [
    (["--speed", EVIL], "--speed: invalid value"),
    (["--theme"], "expected one argument"),
    ([EVIL], "invalid choice"),
    (["--x\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202e"], "unrecognized arguments"),
    (["--headless", "--ssh", f"root@{EVIL}"], "invalid --ssh"),
    (["--headless", "--ssh", f"[{EVIL}]:eth0"], "invalid --ssh"),
    (["--headless", "--listen", f"{EVIL}:8080"], "invalid --listen"),
    (["--headless", "--collect", f"[::1{EVIL}]:2055"], "invalid --collect"),
    (["--headless", "--config", f"/nonexistent/{EVIL}.toml"], "no such file"),
], ids=["speed", "missing-value", "command", "option", "ssh-user", "ssh-v6", "listen",
        "collect", "config-path"])
def test_usage_errors(args: list[str], needle: str) -> None:
    shown = "" if needle == "expected one argument" else SHOWN
    assert_inert(netmon(*args), 2, "usage", needle, shown=shown)


@pytest.mark.parametrize(("toml", "needle"), [
    ("{evil} = 1", "unknown key"),
    ("tick = {evil}", "invalid value"),
    ("listen = [{evil_port}]", "invalid --listen"),
    ("tick = = \x1b]0;PWNED\x07", "config file"),
], ids=["key", "value", "listen", "syntax"])
def test_config_file(tmp_path: Path, toml: str, needle: str) -> None:
    # A JSON string is a TOML basic string: EVIL's control characters as \uXXXX escapes.
    text = toml.format(evil=json.dumps(EVIL), evil_port=json.dumps(EVIL + ":80"))
    # The file's name is hostile only where nothing else is quoted.
    path = tmp_path / (f"netmon{EVIL}.toml" if needle == "config file" else "netmon.toml")
    path.write_text(text + "\n", encoding="utf-8")
    proc = netmon("--headless", "--config", str(path))
    assert_inert(proc, 2, "usage", needle)


@pytest.mark.parametrize(("name", "code", "meaning", "needle"), [
    ("TICK", 2, "usage", "NETMON_TICK"),
    ("READ", 7, "unreadable", "no such file"),
    ("SSH", 2, "usage", "invalid --ssh"),
])
def test_environment(name: str, code: int, meaning: str, needle: str) -> None:
    proc = netmon("--headless", env={f"NETMON_{name}": f"x{EVIL}"})
    assert_inert(proc, code, meaning, needle)


def test_capture_tool_and_interface_errors() -> None:
    if shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed (apt-get install tshark)")
    assert_inert(netmon("--headless", "-i", "lo", "--capture-tool", f"/nonexistent/{EVIL}"),
                 3, "missing", "capture tool")
    proc = netmon("--headless", "--log-level", "info", "-i", f"nosuch{EVIL}")
    assert_inert(proc, 5, "unknown interface", "unknown interface")
    proc = netmon("--headless", env={"NETMON_INTERFACE": f"nosuch{EVIL}"})
    assert_inert(proc, 5, "unknown interface", "unknown interface")


def test_capture_filter_quoting_itself() -> None:
    need_capture()
    proc = netmon("--headless", "-i", "lo", "-f", f"host {EVIL}", "--duration", "5")
    assert_inert(proc, 6, "invalid capture filter", "invalid capture filter")


def test_ssh_stderr() -> None:
    """What ssh (here its ProxyCommand, a real child process) prints is quoted back."""
    if shutil.which("ssh") is None:
        pytest.skip("ssh is not installed")
    # sh's printf: octal escapes for ESC, BEL and the raw C1 CSI byte.
    script = ("printf 'Permission denied (publickey\\033]0;PWNED\\007\\033[2J\\233\\r"
              "\\nforged).\\n' >&2; exit 255")
    proc = netmon("--headless", "--ssh", "127.0.0.1", "--ssh-option",
                  f"ProxyCommand=sh -c \"{script}\"")
    assert_inert(proc, 10, "ssh", "login refused", shown="publickey\\x1b]0;PWNED\\x07")


#: A hostile interface name: IFNAMSIZ allows 15 bytes, and Linux refuses only '/',
#: ':' and white space in one.
EVIL_IFACE = "\x1b]0;PW\x07\x1b[2J"


def in_netns(*args: str) -> subprocess.CompletedProcess:
    """netmon in a network namespace of its own holding a veth named EVIL_IFACE."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace here (needs CAP_SYS_ADMIN)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    env["EVIL_IFACE"] = EVIL_IFACE
    script = 'ip link add name "$EVIL_IFACE" type veth peer name p0 && exec "$@"'
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh",
                           *netmon_cmd(*args)], capture_output=True, timeout=120, env=env,
                          cwd=ROOT)


def test_interface_names_from_the_system() -> None:
    if shutil.which("dumpcap") is None or shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    proc = in_netns("interfaces")
    assert_inert(proc, 0, "ok", shown="")
    out = proc.stdout.decode("utf-8")
    assert any(line.startswith("\\x1b]0;PW\\x07\\x1b[2J ") for line in out.splitlines()), out
    # The interface is down: dumpcap's complaint quotes its name, and so does the log.
    proc = in_netns("--headless", "--log-level", "info", "-i", EVIL_IFACE)
    assert_inert(proc, 9, "capture failed", "capture failed", shown="\\x1b]0;PW\\x07\\x1b[2J")
    assert "netmon: INFO " in proc.stderr.decode()
