"""Runs inside a private mount namespace (under `unshare --mount`): joins the container's memory
cgroup, bind-mounts its volumes, service-account token and termination log, then execs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("cgroup_procs"):
        Path(spec["cgroup_procs"]).write_text(str(os.getpid()))
    # The "image" is the host's project and venv: keep a handle on them so a volume mounted over a
    # directory that holds them (an emptyDir at /tmp when the clone lives under /tmp) cannot hide them.
    image = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in spec.get("image_paths", []) if Path(p).is_dir()}
    for src, dst in spec.get("mounts", []):
        target = Path(dst)
        if Path(src).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        subprocess.run(["mount", "--bind", src, dst], check=True)
    targets = [dst.rstrip("/") + "/" for _, dst in spec.get("mounts", [])]
    for path, fd in image.items():
        if any(path.startswith(t) for t in targets):
            Path(path).mkdir(parents=True, exist_ok=True)
            # --no-canonicalize: resolving the fd link would name the now-hidden path instead of its inode
            subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{fd}", path], check=True)
    if spec.get("workdir"):
        Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
        os.chdir(spec["workdir"])
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:  # like a runtime's "executable file not found"
        print(f"exec {argv[0]}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
