"""`vibecraft-cluster up|down|status|logs|env`: the local cluster from the command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .cluster import ClusterError, LocalCluster
from .config import default_state_dir, find_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vibecraft-cluster", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start etcd, control plane, node and S3 (no-op when running); the node is real "
                              "(kubelet + containerd) unless VIBECRAFT_NODE=agent")
    sub.add_parser("down", help="stop everything, leaving no process behind")
    sub.add_parser("status", help="which components run")
    sub.add_parser("env", help="print shell exports (KUBECONFIG, AWS_*) for this cluster")
    logs = sub.add_parser("logs", help="print a pod's container log")
    logs.add_argument("pod")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument("-c", "--container")
    args = parser.parse_args(argv)
    cluster = LocalCluster.for_user(args.state_dir)
    try:
        if args.cmd == "up":
            cluster.up()
        elif args.cmd == "down":
            cluster.down()
        elif args.cmd == "status":
            for name, pid in cluster.running().items():
                print(f"{name:24} {f'running (pid {pid})' if pid else 'stopped'}")
        elif args.cmd == "env":
            print(f"export KUBECONFIG={cluster.cfg.kubeconfig}")
            for k, v in cluster.cfg.s3_env().items():
                print(f"export {k}={v}")
        elif args.cmd == "logs" and cluster.cfg.node == "kubelet":  # the kubelet serves them: kubectl logs
            cmd = [find_tool("kubectl"), f"--kubeconfig={cluster.cfg.kubeconfig}", "logs", "-n", args.namespace, args.pod]
            return subprocess.run(cmd + (["-c", args.container] if args.container else ["--all-containers"])).returncode
        elif args.cmd == "logs":
            pattern = f"{args.namespace}_{args.pod}_{args.container or '*'}.log"
            files = sorted((cluster.dir / "pod-logs").glob(pattern))
            if not files:
                print(f"no logs for pod {args.namespace}/{args.pod}", file=sys.stderr)
                return 1
            for f in files:
                sys.stdout.write(f.read_text(errors="replace"))
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
