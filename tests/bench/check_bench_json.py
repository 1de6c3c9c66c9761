#!/usr/bin/env python3
"""Runs one sbbench scenario at a tiny size and checks its --json output is well formed.

usage: check_bench_json.py SBBENCH KEY[>=N] [KEY...] -- SCENARIO ARGS...

Each KEY must be present; KEY>=N also needs the value to be at least N. The object must
have no "error" and no lost, duplicated or reordered messages. Figures are not judged
against any time: this is a smoke test of the harness, not a benchmark.
"""
import json
import subprocess
import sys


def main():
    args = sys.argv[1:]
    sbbench = args[0]
    split = args.index("--")
    checks, command = args[1:split], args[split + 1:]
    run = subprocess.run([sbbench, *command, "--json"], capture_output=True, text=True,
                         timeout=600)
    sys.stderr.write(run.stderr)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if len(lines) != 1:
        print(f"expected one JSON line, got: {run.stdout!r}")
        return 1
    report = json.loads(lines[0])
    print(json.dumps(report, indent=1))
    problems = []
    if run.returncode != 0:
        problems.append(f"exit code {run.returncode}")
    if "error" in report:
        problems.append(f"error: {report['error']}")
    for check in checks:
        key, _, minimum = check.partition(">=")
        if key not in report:
            problems.append(f"missing {key}")
        elif minimum and not report[key] >= float(minimum):
            problems.append(f"{key} = {report[key]}, expected at least {minimum}")
    for key, value in report.items():
        if key.endswith(("lost", "duplicated", "reordered")) and value != 0:
            problems.append(f"{key} = {value}")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
