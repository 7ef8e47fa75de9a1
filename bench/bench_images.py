"""Container image sizes against their targets (the unpacked size `podman image inspect` reports).

Reads the images localcluster/build-images.sh builds (run it first; a warm run takes seconds):
  renderer  localhost/vibecraft/renderer:<version>  target <= 700 MB
  operator  localhost/vibecraft/operator:<version>  target <= 250 MB
  api       localhost/vibecraft/api:<version>       target <= 250 MB
Fails (exit 1) if an image misses its target or is missing; skips (exit 0) where podman is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MB = {"renderer": 700, "operator": 250, "api": 250}


def main() -> int:
    if shutil.which("podman") is None:
        print("podman not installed: skipped (apt-get install podman, then bash localcluster/build-images.sh)")
        return 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    failed = False
    for name, target in TARGETS_MB.items():
        ref = f"localhost/vibecraft/{name}:{version}"
        res = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True)
        if res.returncode != 0:
            failed = True
            print(f"{ref:>36}: missing (bash localcluster/build-images.sh)")
            continue
        size = int(res.stdout.strip()) / 1e6
        ok = size <= target
        failed |= not ok
        print(f"{ref:>36}: {size:6.0f} MB (target {target} MB) {'ok' if ok else 'OVER TARGET'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
