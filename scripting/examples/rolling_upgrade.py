#!/usr/bin/env python3
"""Load a new plugin build, watch its error count and p99 latency over a window, and
roll back if it regresses against the version it replaced.

    PYTHONPATH=build/scripting python3 scripting/examples/rolling_upgrade.py \\
        routing build/plugins/routing/librouting-next.so --window 30 --max-p99-ratio 2
"""

import argparse
import sys
import time

import switchboard


def serving(admin, kind):
    plugin = next(p for p in admin.plugins() if p["kind"] == kind)
    current = next((v for v in plugin["versions"] if v["current"]), None)
    return plugin, current


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind")
    parser.add_argument("path")
    parser.add_argument("--socket", default="./var/admin.sock")
    parser.add_argument("--window", type=float, default=30.0, help="seconds to watch")
    parser.add_argument("--max-errors", type=int, default=0, help="new errors tolerated")
    parser.add_argument("--max-p99-ratio", type=float, default=2.0,
                        help="roll back if p99 exceeds the old p99 times this")
    args = parser.parse_args()

    with switchboard.Admin(args.socket) as admin:
        _, before = serving(admin, args.kind)
        old_p99 = before["p99_ns"] if before else 0
        result = admin.load_plugin(args.kind, args.path,
                                   progress=lambda step, detail: print(f"  {step:<10}{detail}"))
        if not result["ok"]:
            print(f"load refused: {result['error']}", file=sys.stderr)
            return 1
        version = result["to_version"]
        print(f"{args.kind} {result['from_version']} -> {version}; watching {args.window:.0f} s")

        _, start = serving(admin, args.kind)
        start_errors = start["errors"] if start else 0
        deadline = time.monotonic() + args.window
        verdict = None
        while time.monotonic() < deadline and verdict is None:
            time.sleep(1)
            plugin, now = serving(admin, args.kind)
            if plugin["version"] != version:
                verdict = f"the host already rolled back to {plugin['version']}"
                break
            errors = now["errors"] - start_errors
            print(f"  {now['calls']} calls, {errors} new errors, p99 {now['p99_ns'] / 1000:.1f} us")
            if errors > args.max_errors:
                verdict = f"{errors} errors"
            elif old_p99 and now["calls"] > 100 and now["p99_ns"] > old_p99 * args.max_p99_ratio:
                verdict = f"p99 {now['p99_ns']} ns vs {old_p99} ns before"
        if verdict is None:
            print(f"{args.kind} {version} kept")
            return 0
        print(f"regression: {verdict}; rolling back", file=sys.stderr)
        if plugin["version"] == version:
            back = admin.rollback_plugin(args.kind, result["from_version"])
            if not back["ok"]:
                print(f"rollback refused: {back['error']}", file=sys.stderr)
                return 2
            print(f"{args.kind} back to {back['to_version']}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
