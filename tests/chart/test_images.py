"""The Dockerfiles: lint clean, and each image's ENTRYPOINT is exactly what the Job (or Deployment)
runs, what the local node agent maps the image to, and a console script the package installs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from vibecraft_localcluster.images import DEFAULT_IMAGES, repository
from vibecraft_operator.jobs import build_job
from vibecraft_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def stage_entrypoints(dockerfile: Path) -> dict[str, list[str]]:
    """ENTRYPOINT of each named stage (the last, unnamed or not, under the key '')."""
    stages: dict[str, list[str]] = {}
    current = ""
    for line in dockerfile.read_text().splitlines():
        if m := re.match(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I):
            current = m.group(1) or ""
        elif m := re.match(r"^ENTRYPOINT\s+(\[.*\])", line):
            stages[current] = json.loads(m.group(1))
    return stages


def scripts() -> dict[str, str]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_dockerfiles_lint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    res = subprocess.run([hadolint, "Dockerfile.renderer", "Dockerfile.operator"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_renderer_entrypoint_is_what_the_job_runs() -> None:
    entry = stage_entrypoints(ROOT / "Dockerfile.renderer")[""]
    assert entry == ["vibecraft-render"]
    assert entry[0] in scripts()
    mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo",
          "metadata": {"name": "x", "namespace": "ns", "uid": "u-1", "generation": 1},
          "spec": {"audio": {"url": "s3://b/a.ogg"}, "output": {"url": "s3://b/o/"}}}
    settings = Settings()
    job = build_job(mv, attempt=1, memory="512Mi", cpu="1", deadline_seconds=600, settings=settings)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's ENTRYPOINT runs...
    assert container["args"] == ["--from-env"]  # ...with the spec from env
    assert DEFAULT_IMAGES[repository(container["image"])]["entrypoint"] == entry


@pytest.mark.parametrize("target", ["operator", "api"])
def test_control_plane_entrypoints(target: str) -> None:
    entry = stage_entrypoints(ROOT / "Dockerfile.operator")[target]
    assert entry == [f"vibecraft-{target}"]
    assert entry[0] in scripts()
    assert DEFAULT_IMAGES[f"vibecraft/{target}"]["entrypoint"] == entry
