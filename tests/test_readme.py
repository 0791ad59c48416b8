"""The README's commands, kept true: the Quick start's make targets exist and CI runs
the second one; the replay examples in "Using it" run as written (with a real capture
for trace.pcap) and print what the README says they print."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from tests.conftest import ROOT, captures_dir, run_netmon

README = (ROOT / "README.md").read_text()


def code_block(after_heading: str) -> list[str]:
    section = README.split(after_heading, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_two_commands_that_make_and_ci_know() -> None:
    lines = code_block("## Quick start")
    assert len(lines) == 2
    targets = re.findall(r"make (\w+)", " ".join(lines))
    assert targets == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_replay_examples_run_as_written(tmp_path: Path) -> None:
    capture = str(captures_dir() / "01_http_espn.pcapng")
    ran = 0
    for line in code_block("## Using it"):
        command = line.split("#", 1)[0].strip()
        if not command.startswith("netmon ") or " -r trace" not in command:
            continue
        if "|" in command:
            command = command.split("|", 1)[0].strip()
        args = shlex.split(command)[1:]
        args = [capture if a.startswith("trace.pcap") else a for a in args]
        args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in args]
        if "--headless" not in args and "--json" not in args:
            args.insert(0, "--headless")  # the screen needs a terminal; same pipeline
        if "--speed" in args:
            args[args.index("--speed") + 1] = "50"  # the file is 2 s long: keep it quick
        proc = run_netmon(*args)
        assert proc.returncode == 0, (command, proc.stderr)
        if "--json" in args:
            final = json.loads(proc.stdout.splitlines()[-1])
            assert final["packets"] == 956 and "pkt_rate" in final
        if "--flows-out" in args:
            out = Path(args[args.index("--flows-out") + 1])
            assert len(out.read_text().splitlines()) == 39
        ran += 1
    assert ran >= 4
