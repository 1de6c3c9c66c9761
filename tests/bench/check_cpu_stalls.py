#!/usr/bin/env python3
"""Runs cpu_stalls briefly in both modes and checks each --json report is whole and
self-consistent.

usage: check_cpu_stalls.py CPU_STALLS

Nothing is judged against time: how many stalls a machine has is what the program measures.
"""
import json
import subprocess
import sys

SPIN_KEYS = ("cpu", "mode", "seconds", "threshold_us", "stalls", "stalls_over_1ms", "stalls_over_2ms",
        "stalls_over_5ms", "longest_us", "lost_share", "budget_us", "quantile",
        "excess_ms_per_s", "highest_share_within_budget")
SLEEP_KEYS = ("cpu", "mode", "seconds", "period_us", "wakeups", "late_p50_us", "late_p99_us",
              "late_p999_us", "late_max_us", "budget_us", "late_over_budget",
              "late_over_budget_share")


def run(cpu_stalls, *args):
    out = subprocess.run([cpu_stalls, "--cpu", "0", "--seconds", "0.2", "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return out, json.loads(out)


def spin_problems(report):
    problems = [f"no {key}" for key in SPIN_KEYS if key not in report]
    if problems:
        return problems
    if report["mode"] != "spin":
        problems.append("the mode is not spin")
    if not report["stalls"] >= report["stalls_over_1ms"] >= report["stalls_over_2ms"] \
            >= report["stalls_over_5ms"] >= 0:
        problems.append("the stall counts by length are not nested")
    if not 0 <= report["highest_share_within_budget"] <= 1:
        problems.append("highest_share_within_budget is not a share")
    if report["seconds"] < 0.2 or report["budget_us"] != 1000 or report["quantile"] != 0.99:
        problems.append("the window, budget or quantile is not what was asked")
    return problems


def sleep_problems(report):
    problems = [f"no {key}" for key in SLEEP_KEYS if key not in report]
    if problems:
        return problems
    if report["mode"] != "sleep" or report["period_us"] != 500:
        problems.append("the mode or period is not what was asked")
    # 0.2 s at 500 µs: 400 deadlines, each woken once.
    if report["wakeups"] != 400:
        problems.append(f"{report['wakeups']} wake-ups, not 400")
    if not 0 <= report["late_p50_us"] <= report["late_p99_us"] <= report["late_p999_us"] \
            <= report["late_max_us"]:
        problems.append("the lateness percentiles are not in order")
    if report["late_over_budget"] > report["wakeups"]:
        problems.append("more wake-ups over the budget than wake-ups")
    return problems


def main():
    spin_out, spin = run(sys.argv[1])
    sleep_out, sleep = run(sys.argv[1], "--mode", "sleep", "--period-us", "500")
    problems = spin_problems(spin) + sleep_problems(sleep)
    print(spin_out.strip())
    print(sleep_out.strip())
    if problems:
        print("\n".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
