#!/usr/bin/env python3
"""Print the N sessions with the longest outbound queues.

    PYTHONPATH=build/scripting python3 scripting/examples/top_queues.py --socket var/admin.sock -n 5
"""

import argparse
import sys

import switchboard


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="./var/admin.sock")
    parser.add_argument("-n", type=int, default=10, help="how many sessions")
    args = parser.parse_args()
    try:
        with switchboard.Admin(args.socket) as admin:
            queues = admin.queues(limit=args.n)
    except switchboard.Error as error:
        print(f"top_queues: {error}", file=sys.stderr)
        return 1
    if not queues:
        print("no live sessions")
        return 0
    print(f"{'PHONE':<18}{'QUEUE':>8}{'MAX':>8}{'DELIVERED':>11}  PEER")
    for s in queues:
        print(f"{s['phone']:<18}{s['queue_length']:>8}{s['max_queue_length']:>8}"
              f"{s['delivered']:>11}  {s['peer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
