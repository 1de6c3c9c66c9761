#!/usr/bin/env python3
"""Upgrade a plugin across a cluster, node by node: load the new build on one node,
wait for its probation window to close, then the next; stop at the first node that
fails, leaving it on the version it had.

    PYTHONPATH=build/scripting python3 scripting/examples/cluster_rolling_upgrade.py \\
        routing build/plugins/routing/librouting-next.so --socket var/n1/admin.sock

The path must name the library on every node's machine. The nodes upgraded before
a failure keep the new version; roll them back one by one with
admin.rollback_plugin(kind, node=NAME) if you want the whole cluster back.
This is what `sbctl cluster upgrade KIND PATH` does.
"""

import argparse
import os
import sys

import switchboard


def version_of(plugin_versions, kind):
    """'routing' in 'auth=1.0.0 routing=1.1.0 ...' -> '1.1.0'."""
    for word in plugin_versions.split():
        name, _, version = word.partition("=")
        if name == kind:
            return version
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind")
    parser.add_argument("path")
    parser.add_argument("--socket", default=None, help="any node's admin socket")
    parser.add_argument("--nodes", default="", help="comma-separated, in this order "
                                                    "(default: every node, by name)")
    parser.add_argument("--node-timeout", type=float, default=120.0,
                        help="seconds each node has for its load and probation")
    args = parser.parse_args()
    path = os.path.abspath(args.path) if os.path.exists(args.path) else args.path

    with switchboard.Admin(args.socket) as admin:
        cluster = admin.cluster()
        if cluster["state"] != "connected" or cluster["error"]:
            print(f"not a connected cluster node: {cluster['state']} {cluster['error']}",
                  file=sys.stderr)
            return 2
        before = {n["name"]: version_of(n["plugin_versions"], args.kind)
                  for n in cluster["nodes"]}
        order = args.nodes.split(",") if args.nodes else sorted(before)
        unknown = [name for name in order if name not in before]
        if unknown:
            print(f"not in the cluster: {', '.join(unknown)}", file=sys.stderr)
            return 2

        for i, name in enumerate(order):
            [result] = admin.load_plugin(args.kind, path, node=name, wait_probation=True,
                                         node_timeout=args.node_timeout)
            if result["answered"] and result["ok"]:
                print(f"{name}: {result['from_version'] or '-'} -> {result['to_version']}, "
                      "probation passed")
                continue
            print(f"{name}: failed: {result['error']}", file=sys.stderr)
            if not result["answered"]:
                # It may have loaded before going quiet: put it back if it did.
                now = {n["name"]: version_of(n["plugin_versions"], args.kind)
                       for n in admin.cluster()["nodes"]}
                if before[name] and now.get(name, before[name]) != before[name]:
                    [back] = admin.rollback_plugin(args.kind, before[name], node=name,
                                                   node_timeout=args.node_timeout)
                    print(f"{name}: rolled back to {before[name]}: "
                          f"{'ok' if back['ok'] else back['error']}", file=sys.stderr)
            rest = order[i + 1:]
            print(f"upgrade stopped at {name}" + (f"; not upgraded: {' '.join(rest)}" if rest else ""),
                  file=sys.stderr)
            return 1
        print(f"{args.kind}: every node upgraded")
        return 0


if __name__ == "__main__":
    sys.exit(main())
