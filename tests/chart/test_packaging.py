"""The extras in pyproject.toml are one contract per component: resolving each against the package
index (pip --dry-run --report) proves the renderer image never pulls the control plane (kopf,
FastAPI) and the operator/API image never pulls the audio stack (librosa, numba), transitively.

Marked `index`: the resolutions need PyPI (or PIP_INDEX_URL); deselect offline with -m "not index".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

CONTROL_PLANE = {"kopf", "fastapi", "starlette", "uvicorn"}
AUDIO = {"librosa", "numba", "llvmlite", "soundfile"}

# extras -> (must be installed, must not be installed); names normalised as in PEP 503.
CASES: dict[str, tuple[set[str], set[str]]] = {
    "": ({"pydantic", "pyyaml", "boto3"}, CONTROL_PLANE | AUDIO | {"kubernetes"}),
    "renderer": ({"librosa", "numba", "scikit-learn", "kubernetes"}, CONTROL_PLANE),
    "operator": ({"kopf", "kubernetes", "pydantic-settings"}, AUDIO | {"fastapi", "uvicorn"}),
    "operator,api": ({"kopf", "fastapi", "uvicorn"}, AUDIO),
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_copy(dest: Path) -> Path:
    """Just what setuptools needs to build the metadata: pip builds a local project in place (it
    writes vibecraft.egg-info), so the resolutions run on copies, not on the shared working tree."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for where in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]:
        shutil.copytree(ROOT / where, dest / where, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def resolve(extras: str, work: Path) -> set[str]:
    """Names pip would install for `.[extras]` into an empty environment (nothing installed is reused)."""
    src = source_copy(work / "src")
    report = work / "report.json"
    target = f".[{extras}]" if extras else "."
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", str(report), target], cwd=src, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, f"pip could not resolve {target} (is the package index reachable?):\n{res.stderr}"
    return {normalise(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """All resolutions at once (each is mostly waiting on the index): ~20 s instead of ~70 s."""
    base = tmp_path_factory.mktemp("extras")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {extras: pool.submit(resolve, extras, base / (extras.replace(",", "+") or "base"))
                   for extras in CASES}
        return {extras: fut.result() for extras, fut in futures.items()}


@pytest.mark.index
@pytest.mark.parametrize("extras", list(CASES), ids=lambda e: f"[{e}]" if e else "base")
def test_extra_resolves_without_the_other_components(extras: str, resolved: dict[str, set[str]]) -> None:
    installed = resolved[extras]
    wanted, unwanted = CASES[extras]
    assert "vibecraft" in installed
    assert wanted <= installed, f"missing: {sorted(wanted - installed)}"
    assert not unwanted & installed, f".[{extras}] pulls {sorted(unwanted & installed)}; installs {sorted(installed)}"


def test_images_install_their_extras() -> None:
    """The images install exactly the extras resolved above."""
    installs = {
        "Dockerfile.renderer": '".[renderer]"',
        "Dockerfile.operator": '".[operator,api]"',
    }
    for dockerfile, target in installs.items():
        text = (ROOT / dockerfile).read_text().replace("\\\n", " ")  # join continued lines
        found = re.findall(r"pip install [^&\n]*?(\"\.\[[^\]]*\]\")", text)
        assert found == [target], (dockerfile, found)


def test_dev_is_every_component() -> None:
    """`make bootstrap` installs .[dev]: the venv runs every component, the local cluster and the tests."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    components = {"renderer", "operator", "api", "localcluster"}
    assert components <= set(extras)
    selfrefs = set()
    for req in extras["dev"]:
        if m := re.fullmatch(r"vibecraft\[([^\]]+)\]", req.replace(" ", "")):
            selfrefs |= set(m.group(1).split(","))
    assert components <= selfrefs, extras["dev"]
    assert '.[dev]"' in (ROOT / "localcluster" / "bootstrap.sh").read_text()
