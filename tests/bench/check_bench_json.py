#!/usr/bin/env python3
"""Runs one sbbench scenario at a tiny size and checks its --json output is well formed.

usage: check_bench_json.py SBBENCH KEY[>=N|==N] [KEY...] -- SCENARIO ARGS...

An ARG --tls-throwaway becomes --tls-ca/--tls-cert/--tls-key of a CA and server certificate
made by openssl in a temporary directory (the phones then speak TLS to the phone port), and
the report must say "tls": 1.

Each KEY must be present; KEY>=N also needs the value to be at least N, KEY==N exactly N
(KEY==OTHER: the same value as the report's OTHER; KEY==text: that text). The object must
have no "error" and no lost, duplicated or reordered messages. Where a latency is reported
both from the actual send (PREFIXp50_us) and from the intended send (PREFIXintended_p50_us),
the second can never be the smaller: a message is sent at or after its intended time, and
both are read on the same receive clock. Figures are not judged against any time: this is
a smoke test of the harness, not a benchmark.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def latency_order_problems(report):
    """Each intended_* percentile against its actual-send twin (same prefix)."""
    problems = []
    for key, intended in report.items():
        prefix, marker, rest = key.rpartition("intended_")
        if not marker or rest not in ("p50_us", "p99_us", "p999_us", "max_us"):
            continue
        actual_key = prefix + rest
        if actual_key not in report:
            problems.append(f"{key} without {actual_key}")
        elif intended < report[actual_key]:
            problems.append(f"{key} = {intended} is below {actual_key} = {report[actual_key]}")
    return problems


def expected_value(report, text):
    """What KEY==text asks for: another key's value, a number, or the text itself."""
    if text in report:
        return report[text]
    try:
        return float(text)
    except ValueError:
        return text


def throwaway_tls(directory):
    """sbbench's TLS flags for a CA and a certificate for 127.0.0.1 made in `directory`."""
    d = Path(directory)
    new_key = ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    (d / "server.ext").write_text("subjectAltName=DNS:127.0.0.1,IP:127.0.0.1\n")
    for step in ([*new_key, "-x509", "-days", "2", "-subj", "/CN=bench-ca",
                  "-keyout", "ca.key", "-out", "ca.pem"],
                 [*new_key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"],
                 ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                  "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem"]):
        subprocess.run(step, cwd=d, check=True, capture_output=True)
    return ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / "server.pem"),
            "--tls-key", str(d / "server.key")]


def main():
    args = sys.argv[1:]
    sbbench = args[0]
    split = args.index("--")
    checks, command = args[1:split], args[split + 1:]
    with tempfile.TemporaryDirectory() as directory:
        if "--tls-throwaway" in command:
            command.remove("--tls-throwaway")
            command += throwaway_tls(directory)
            checks.append("tls>=1")
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
        key, _, exact = check.partition("==")
        key, _, minimum = key.partition(">=")
        if key not in report:
            problems.append(f"missing {key}")
        elif minimum and not report[key] >= float(minimum):
            problems.append(f"{key} = {report[key]}, expected at least {minimum}")
        elif exact and report[key] != expected_value(report, exact):
            problems.append(f"{key} = {report[key]}, expected {exact} = {expected_value(report, exact)}")
    for key, value in report.items():
        if key.endswith(("lost", "duplicated", "reordered")) and value != 0:
            problems.append(f"{key} = {value}")
    problems += latency_order_problems(report)
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
