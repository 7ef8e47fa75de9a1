"""Which local command stands for which container image (there is no container runtime here).

Docker semantics: `command` replaces the image's ENTRYPOINT, `args` replaces its CMD; `env` is its ENV. The map
mirrors the ENTRYPOINT/CMD of the project's Dockerfiles; extra images can be added with the env
var VIBECRAFT_NODE_IMAGES (JSON: {"repo/name": {"entrypoint": [...], "cmd": [...]}}).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vibecraft_common.resource import ENV_NUMBA_SEED

from .config import cache_root


def numba_cache() -> str:
    """The warm numba cache render pods are seeded from (`make bootstrap` fills it).

    One per checkout: numba keys its cache entries by the absolute path of the compiled sources, so
    a cache warmed from another clone's venv would miss and every pod would compile for ~20 s.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    checkout = hashlib.sha1(str(Path(__file__).resolve().parents[2]).encode(), usedforsecurity=False)
    return str(cache_root() / "numba" / checkout.hexdigest()[:12])


DEFAULT_IMAGES: dict[str, dict[str, Any]] = {
    # Dockerfile.renderer bakes a warm numba cache into the image (ENV NUMBA_CACHE_DIR), sparing each Job
    # ~20 s of compiling. `env_dirs` gives each container its own copy, as an image layer would: a pod
    # OOM-killed while numba writes its cache must not corrupt the one every other pod reads.
    "vibecraft/renderer": {"entrypoint": ["vibecraft-render"], "cmd": ["--help"],
                           "env": {"PYTHONUNBUFFERED": "1", ENV_NUMBA_SEED: numba_cache()},
                           "env_dirs": {"NUMBA_CACHE_DIR": numba_cache()}},
    "vibecraft/operator": {"entrypoint": ["vibecraft-operator"], "cmd": [], "env": {"PYTHONUNBUFFERED": "1"}},
    "vibecraft/api": {"entrypoint": ["vibecraft-api"], "cmd": [], "env": {"PYTHONUNBUFFERED": "1"}},
    "python": {"entrypoint": [], "cmd": ["python3"]},
    "busybox": {"entrypoint": [], "cmd": ["sh"]},
}


def load_images() -> dict[str, dict[str, Any]]:
    images = dict(DEFAULT_IMAGES)
    extra = os.environ.get("VIBECRAFT_NODE_IMAGES")
    if extra:
        images.update(json.loads(extra))
    return images


def repository(image: str) -> str:
    """`registry:5000/vibecraft/renderer:0.1.0@sha256:…` → `vibecraft/renderer`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref.rsplit(":", 1)[0]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # drop the registry host
    if parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def resolve_command(image: str, command: list[str] | None, args: list[str] | None,
                    images: dict[str, Any]) -> list[str] | None:
    """The argv to run, or None for an image this node cannot 'pull'."""
    repo = repository(image)
    known = images.get(repo) or images.get(repo.rsplit("/", 1)[-1] if repo.count("/") else "")
    if known is None:
        return None
    entry = list(command) if command else list(known.get("entrypoint", []))
    rest = list(args) if args is not None else ([] if command else list(known.get("cmd", [])))
    argv = entry + rest
    return argv or None
