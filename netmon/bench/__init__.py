"""Benchmarks: ``python -m netmon.bench NAME`` (see ``__main__``). Never imported by
product code; each module runs on the main thread of its own process and starts netmon,
tshark, softflowd or servers as child processes, measured beside same-run baselines."""
