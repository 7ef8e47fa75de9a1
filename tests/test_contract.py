"""One contract: the CRD, the API and the renderer take the spec from vibecraft_common, and nothing
else spells its bounds, phases, output names or env names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_common import crd, limits, resource, status

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("renderer", "operator", "api", "localcluster")


def test_committed_crds_are_what_the_models_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert crd.main(["--check"]) == 0, "crds/musicvideo.yaml is stale: run make crds"
    assert yaml.safe_load((ROOT / "crds" / "musicvideo.yaml").read_text()) == crd.crd()


# Reads the fps bound from the CRD, the API's OpenAPI and the renderer (its CLI and its spec
# validation), after (optionally) changing limits.FPS_MAX before anything imports the models.
PROBE = r"""
import json, sys, os, tempfile
from vibecraft_common import limits
if len(sys.argv) > 1:
    limits.FPS_MAX = int(sys.argv[1])
from vibecraft_common import crd
from vibecraft_api.main import create_app
from vibecraft_api.settings import Settings
from vibecraft_renderer import cli
from vibecraft_renderer.config import spec_from_dict
from vibecraft_renderer.errors import UsageError

video = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["video"]
openapi = create_app(Settings(cors_origins=[])).openapi()
api = openapi["components"]["schemas"]["Video"]["properties"]["fps"]["maximum"]

def renderer_accepts(fps):
    try:
        spec_from_dict({"audio": {"url": "a.ogg"}, "output": {"url": "o.mp4"}, "video": {"fps": fps}})
        return True
    except UsageError:
        return False

top = max(f for f in range(1, 200) if renderer_accepts(f))
with tempfile.TemporaryDirectory() as tmp:
    os.environ["VIBECRAFT_TERMINATION_LOG"] = os.path.join(tmp, "log")
    code = cli.main([os.path.join(tmp, "a.ogg"), "-o", os.path.join(tmp, "o.mp4"), "--fps", str(top + 1)])
    refusal = open(os.environ["VIBECRAFT_TERMINATION_LOG"]).read().strip()
fps = video["properties"]["fps"]
print(json.dumps({"crd": fps["maximum"], "crdText": fps["description"],
                  "api": api, "renderer": top, "cliExit": code, "cliRefusal": refusal,
                  "cliHelp": cli.build_parser().format_help()}))
"""


def _probe(*args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("fps_max", [None, 48])
def test_one_bound_changes_the_crd_the_api_and_the_renderer_together(fps_max: int | None) -> None:
    """Changing limits.FPS_MAX (here in a child process) moves all three; unchanged, all three say 60."""
    want = fps_max or limits.FPS_MAX
    seen = _probe(*([str(fps_max)] if fps_max else []))
    assert (seen["crd"], seen["api"], seen["renderer"]) == (want, want, want)
    assert f"{limits.FPS_MIN} to {want}." in seen["crdText"]  # kubectl explain shows the bounds
    assert seen["cliExit"] == resource.EXIT_USAGE
    assert f"less than or equal to {want}" in seen["cliRefusal"]
    assert f"{limits.FPS_MIN}..{want}" in seen["cliHelp"]
    if fps_max is None:  # and the committed CRD says the same
        committed = yaml.safe_load((ROOT / "crds" / "musicvideo.yaml").read_text())
        video = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["video"]
        assert video["properties"]["fps"]["maximum"] == want


def test_the_charts_ttl_bound_is_the_contracts() -> None:
    """values.schema.json is JSON, not generated: its bound of operator.ttlSecondsAfterFinished is checked here."""
    schema = json.loads((ROOT / "charts/vibecraft/values.schema.json").read_text())
    ttl = schema["properties"]["operator"]["properties"]["ttlSecondsAfterFinished"]
    crd_ttl = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "ttlSecondsAfterFinished"]
    assert ttl["maximum"] == crd_ttl["maximum"] == limits.TTL_AFTER_FINISHED_MAX_SECONDS
    assert ttl["minimum"] == crd_ttl["minimum"] == 0


def test_the_charts_parallelism_cap_is_the_contracts() -> None:
    schema = json.loads((ROOT / "charts/vibecraft/values.schema.json").read_text())
    cap = schema["properties"]["operator"]["properties"]["maxParallelism"]
    assert (cap["minimum"], cap["maximum"]) == (limits.PARALLELISM_MIN, limits.PARALLELISM_MAX)


def test_vocabularies_reach_the_crd() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    video = schema["spec"]["properties"]["video"]["properties"]
    assert video["aspectRatio"]["enum"] == list(limits.ASPECT_RATIOS)
    assert video["preset"]["enum"] == list(limits.PRESETS) and video["preset"]["default"] == limits.DEFAULT_PRESET
    assert video["cutEvery"]["enum"] == list(limits.CUT_EVERY)
    st = schema["status"]["properties"]
    assert st["phase"]["enum"] == list(status.PHASES)
    assert st["progress"]["properties"]["stage"]["enum"] == list(status.STAGES)
    assert st["lastFailure"]["properties"]["kind"]["enum"] == list(status.FAILURE_KINDS)
    assert st["analysis"]["properties"]["tempoSource"]["enum"] == list(limits.TEMPO_SOURCES)


# --------------------------------------------------------------------- no copies outside vibecraft_common

CONTRACT_ENV = {v for k, v in vars(resource).items() if k.startswith("ENV_")}
CONTRACT_STRINGS = {*status.PHASES, *status.OUTPUT_NAMES, *CONTRACT_ENV, resource.LABEL_FINISHED,
                    resource.ANNOTATION_DELETE_OUTPUTS}
# Kubernetes' own words that happen to look like ours (Pod phases, Job condition types), each named
# once in the operator's constants; and the local node agent, a kubelet stand-in that speaks Pod phases.
KUBERNETES_VOCABULARY = {("operator/vibecraft_operator/constants.py", name) for name in
                         ("POD_RUNNING", "POD_FAILED", "POD_SUCCEEDED", "JOB_FAILED")}
KUBELET_STAND_IN = "localcluster/vibecraft_localcluster/node_agent.py"


def _string_literals(path: Path) -> list[tuple[int, str, str]]:
    """(line, value, assigned name) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    names: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            for value in ast.walk(node):
                if isinstance(value, ast.Constant):
                    names[id(value)] = next((t.id for t in targets if isinstance(t, ast.Name)), "")
    return [(n.lineno, n.value, names.get(id(n), "")) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_phase_output_name_or_env_name_is_spelled_outside_common() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, value, name in _string_literals(path):
                # The components' env names are the contract's; localcluster's own knobs (VIBECRAFT_CACHE...)
                # and settings prefixes ("VIBECRAFT_API_") are not env names the components share.
                env_name = package != "localcluster" and re.fullmatch(r"VIBECRAFT_[A-Z0-9_]*[A-Z0-9]", value)
                if value not in CONTRACT_STRINGS and not env_name:
                    continue
                if (rel, name) in KUBERNETES_VOCABULARY or (rel == KUBELET_STAND_IN and value in status.PHASES):
                    continue
                found.append(f"{rel}:{line}: {value!r}")
    assert not found, "import these from vibecraft_common instead:\n" + "\n".join(found)


def test_the_scan_finds_a_copy(tmp_path: Path) -> None:
    """The scan above can fail: a phase, an output name and an env name written out are all caught."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""Succeeded in a docstring is fine."""\nA = "Succeeded"\nB = f"{A}/video.mp4"\nC = "video.mp4"\n'
                      'D = "VIBECRAFT_SPEC_JSON"\n')
    assert [v for _, v, _ in _string_literals(sample) if v in CONTRACT_STRINGS] == ["Succeeded", "video.mp4",
                                                                                      "VIBECRAFT_SPEC_JSON"]


def test_parallelism_is_bounded_in_the_model_and_the_crd() -> None:
    """spec.parallelism (issue 20): 1..PARALLELISM_MAX or auto; nothing else reaches the operator."""
    from pydantic import ValidationError
    from vibecraft_common import limits as L
    from vibecraft_common.spec import MusicVideoSpec

    base = {"audio": {"url": "s3://bucket/song.ogg"}, "output": {"url": "s3://bucket/out/"}}
    for good in (1, L.PARALLELISM_MAX, "auto"):
        assert MusicVideoSpec.model_validate({**base, "parallelism": good}).parallelism == good
    for bad in (0, L.PARALLELISM_MAX + 1, "many", True, 2.5):
        with pytest.raises(ValidationError):
            MusicVideoSpec.model_validate({**base, "parallelism": bad})
    crd = yaml.safe_load((ROOT / "crds" / "musicvideo.yaml").read_text())
    field = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parallelism"]
    assert field["x-kubernetes-int-or-string"] is True
    assert f"self <= {L.PARALLELISM_MAX}" in field["x-kubernetes-validations"][0]["rule"]
