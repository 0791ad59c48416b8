"""Settings layering (defaults < config file < NETMON_* < flags), config-file errors
that name the key, the default-route interface, and the SSH self-exclusion filter."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netmon.app.cli import build_parser, settings_from_args, ssh_exclusion
from netmon.core.errors import SourceError
from netmon.core.settings import LIMITS, Settings, config_path, load_settings
from netmon.sources.interfaces import default_interface
from tests.conftest import run_netmon


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('theme = "netmon-light"\nidle-timeout = 30\nmax_flows = 1000\n'
                   'no-ports = true\n')
    env = {"NETMON_MAX_FLOWS": "2000"}
    s = load_settings(env, cfg)
    assert (s.theme, s.idle_timeout, s.max_flows, s.no_ports) == ("netmon-light", 30.0, 2000,
                                                                  True)
    args = build_parser().parse_args(["--config", str(cfg), "--idle-timeout", "5",
                                      "--headless", "-r", "x.pcap"])
    s = settings_from_args(args, env)
    assert (s.idle_timeout, s.max_flows, s.theme) == (5.0, 2000, "netmon-light")


def test_default_config_path_follows_xdg(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "netmon" / "config.toml"
    assert config_path({"NETMON_CONFIG": "/etc/netmon.toml"}) == Path("/etc/netmon.toml")
    (tmp_path / "netmon").mkdir()
    (tmp_path / "netmon" / "config.toml").write_text("tick = 1\n")
    assert load_settings({"XDG_CONFIG_HOME": str(tmp_path)}).tick == 1.0
    assert load_settings({"XDG_CONFIG_HOME": str(tmp_path / "none")}) == Settings()


@pytest.mark.parametrize("text,needle", [
    ("colour = 1\n", "unknown key 'colour'"),
    ('max-flows = "many"\n', "max-flows"),
    ("headless = 1\n", "true or false"),
    ("tick = [\n", "config file"),
    ('listen = [8080]\n', "a list of strings"),
])
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(SourceError) as err:
        load_settings({}, cfg)
    assert needle in err.value.message and err.value.exit_code == 2


def test_bad_config_is_one_line_from_the_command(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_flows = -3\ncolour = 2\n")
    proc = run_netmon("--headless", "--config", str(cfg), "-r", "x.pcap")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("netmon: config file")
    assert "colour" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_netmon("--headless", "--config", str(tmp_path / "missing.toml"), "-r", "x")
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_default_interface_reads_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\n"
                     "lo\t0000007F\t00000000\t0001\n"
                     "ens3\t00000000\t0102A8C0\t0003\n")
    assert default_interface(str(table)) == "ens3"
    assert default_interface(str(tmp_path / "none")) == ""


def test_ssh_exclusion_filter() -> None:
    env = {"SSH_CONNECTION": "10.1.2.3 51000 10.9.9.9 22"}
    bpf, note = ssh_exclusion("tcp", env, include=False)
    assert bpf == ("(tcp) and not (host 10.1.2.3 and port 51000 and host 10.9.9.9 and "
                   "port 22)")
    assert note == "10.1.2.3:51000 -> 10.9.9.9:22"
    assert ssh_exclusion("", env, include=True) == ("", "")
    assert ssh_exclusion("udp", {}, include=False) == ("udp", "")
    assert ssh_exclusion("", {"SSH_CONNECTION": "garbage"}, include=False) == ("", "")
    if shutil.which("dumpcap"):
        bpf, _ = ssh_exclusion("", env, include=False)
        proc = subprocess.run(["dumpcap", "-i", "lo", "-d", "-f", bpf], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr


def test_readme_config_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "config.toml"
    cfg.write_text(block)
    s = load_settings({}, cfg)
    assert s.theme == "netmon-light" and s.interface == "eth0" and s.packet_mb == 128
    # a file naming an interface does not stop a replay given on the command line
    args = build_parser().parse_args(["--config", str(cfg), "--headless", "-r", "x.pcap"])
    s = settings_from_args(args, {})
    assert s.read == "x.pcap" and s.interface == "" and s.bpf == ""


def test_every_setting_is_documented_in_the_readme() -> None:
    from dataclasses import fields

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [f.name for f in fields(Settings)
               if f"| `{f.name.replace('_', '-')}` |" not in readme]
    assert not missing, f"settings missing from the README's table: {missing}"


# ------------------------------------------------------------------ numeric ranges
def _kind(name: str) -> type:
    return type(getattr(Settings, name))


def _out_of_range(name: str) -> list[str]:
    """Values just outside the setting's range, and ones of the wrong kind."""
    limit, kind = LIMITS[name], _kind(name)
    step = 1 if kind is int else 0.01
    low = limit.low if limit.above else limit.low - step
    bad = [str(kind(low)), str(kind(limit.high + step))]
    return bad + (["1.5"] if kind is int else ["nan", "inf"])


def _run_all(runs: list[tuple[list[str], dict]]) -> list[subprocess.CompletedProcess]:
    """Run the real command once per (args, env), a few at a time (each is a start-up)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda run: run_netmon(*run[0], env=run[1]), runs))


def _assert_range_error(proc: subprocess.CompletedProcess, name: str, origin: str) -> None:
    assert proc.returncode == 2, (origin, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netmon: "), proc.stderr
    assert origin in lines[0] and LIMITS[name].describe(_kind(name)) in lines[0], lines[0]


def test_every_numeric_setting_has_a_range() -> None:
    from dataclasses import fields

    numeric = {f.name for f in fields(Settings) if _kind(f.name) in (int, float)}
    assert numeric == set(LIMITS)
    assert LIMITS["seed"].describe(int) == "a whole number from 0 to 4_294_967_295"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "| `seed` | `0` | 0 to 4_294_967_295 (whole) |" in readme
    assert "| `idle-timeout` | `60.0` | > 0 to 100_000_000 |" in readme


def test_out_of_range_flags_are_one_line_and_exit_2() -> None:
    # setting -> its long flag (--packet-memory sets packet_mb)
    flags = {action.dest: action.option_strings[-1] for action in build_parser()._actions
             if action.option_strings}
    runs, named = [], []
    for name in LIMITS:
        flag = flags.get(name)
        if flag is None:  # top-flows: config file and environment only
            continue
        for value in _out_of_range(name):
            runs.append((["--headless", "-r", "x.pcap", f"{flag}={value}"], {}))
            named.append((name, f"argument {flag}" if flag != "--count" else "--count"))
    assert len(named) >= 13 * 3
    for proc, (name, origin) in zip(_run_all(runs), named, strict=True):
        _assert_range_error(proc, name, origin)


def test_out_of_range_environment_is_one_line_and_exit_2() -> None:
    runs, named = [], []
    for name in LIMITS:
        var = f"NETMON_{name.upper()}"
        for value in _out_of_range(name):
            runs.append((["--headless", "-r", "x.pcap"], {var: value}))
            named.append((name, var))
    for proc, (name, origin) in zip(_run_all(runs), named, strict=True):
        _assert_range_error(proc, name, origin)


def test_out_of_range_config_values_are_one_line_and_exit_2(tmp_path: Path) -> None:
    runs, named = [], []
    for name in LIMITS:
        key = name.replace("_", "-")
        for i, value in enumerate(_out_of_range(name)):
            cfg = tmp_path / f"{name}{i}.toml"
            cfg.write_text(f"{key} = {value}\n")  # TOML has nan and inf too
            runs.append((["--headless", "--config", str(cfg), "-r", "x.pcap"], {}))
            named.append((name, f"{key} in {cfg}"))
    for proc, (name, origin) in zip(_run_all(runs), named, strict=True):
        _assert_range_error(proc, name, origin)


def test_range_ends_are_accepted(tmp_path: Path) -> None:
    for name, limit in LIMITS.items():
        kind = _kind(name)
        ends = [limit.high] + ([] if limit.above else [limit.low])
        for end in ends:
            value = kind(end)
            assert getattr(load_settings({f"NETMON_{name.upper()}": str(value)}), name) == value
            cfg = tmp_path / "c.toml"
            cfg.write_text(f"{name} = {value}\n")
            assert getattr(load_settings({}, cfg).validated(), name) == value
    with pytest.raises(SourceError, match="seed = -1"):
        Settings(seed=-1).validated()
