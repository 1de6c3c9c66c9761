#!/usr/bin/env python3
"""Register users from a CSV (phone[,device_name]) with request_code, the code from
the host's outbox (development SMS sink) and verify. Writes phone,key_hex to stdout;
draws a progress bar on stderr.

    PYTHONPATH=build/scripting python3 scripting/examples/bulk_import.py users.csv \\
        --host 127.0.0.1 --port 5222 --socket var/admin.sock > keys.csv
"""

import argparse
import csv
import sys
import time

import switchboard


def draw(done, total, failed, started):
    width = 40
    filled = width * done // total if total else width
    rate = done / max(time.monotonic() - started, 1e-6)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     f"  {failed} failed  {rate:.1f}/s ")
    sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--socket", default="./var/admin.sock")
    args = parser.parse_args()

    with open(args.csv, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    failed = 0
    started = time.monotonic()
    writer = csv.writer(sys.stdout)
    with switchboard.Admin(args.socket) as admin, \
            switchboard.Client(args.host, args.port) as client:
        for done, row in enumerate(rows, 1):
            phone = row[0].strip()
            device = row[1].strip() if len(row) > 1 else "import"
            try:
                client.request_code(phone)
                code = admin.outbox(phone, limit=1)[0]["code"]
                key = client.verify(phone, code, device)
                writer.writerow([phone, key.hex()])
            except (switchboard.Error, IndexError) as error:
                failed += 1
                sys.stderr.write(f"\r{phone}: {error}\n")
            draw(done, len(rows), failed, started)
    sys.stderr.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
