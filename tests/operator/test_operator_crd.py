"""The CRD is a structural schema that declares every status field the operator writes."""

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_common.limits import BEAT_OFFSET_MAX_SECONDS, BEAT_OFFSET_MIN_SECONDS, BPM_MAX, BPM_MIN, TEMPO_SOURCES
from vibecraft_common.resource import GROUP, KIND, PLURAL, SHORT_NAME, VERSION
from vibecraft_common.status import summary_of
from vibecraft_operator import status as st
from vibecraft_operator.classify import Failure, FailureKind
from vibecraft_operator.reconcile import Outputs, default_outputs

from tests.operator.operator_factories import T0, job, musicvideo, pod, spec, step

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "musicvideo.yaml").read_text())
VERSION_DEF = CRD["spec"]["versions"][0]
SCHEMA = VERSION_DEF["schema"]["openAPIV3Schema"]


def walk_schema(node: dict[str, Any], path: str = ""):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk_schema(child, f"{path}.{key}")
    if "items" in node:
        yield from walk_schema(node["items"], f"{path}[]")


def schema_at(path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for key in path:
        if node is None:
            return None
        if node.get("type") == "array":
            node = node["items"]
        node = (node.get("properties") or {}).get(key)
    return node


def undeclared(value: Any, path: list[str]) -> list[str]:
    """Paths in `value` that the schema would prune."""
    node = schema_at(path)
    if node is None:
        return [".".join(path)]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    missing: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            missing += undeclared(child, [*path, key])
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                for key, child in item.items():
                    missing += undeclared(child, [*path, key])
    return missing


def test_identity_matches_the_shared_constants():
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (CRD["spec"]["group"], VERSION_DEF["name"], names["kind"], names["plural"]) == (GROUP, VERSION, KIND, PLURAL)
    assert names["shortNames"] == [SHORT_NAME] and names["categories"] == ["vibecraft"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION_DEF["subresources"] == {"status": {}}


def test_structural_every_node_has_a_type():
    for path, node in walk_schema(SCHEMA):
        assert node.get("type") or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"), f"{path or '<root>'} has no type"
        if node.get("type") == "array":
            assert "items" in node, path


def test_validation_rules_carry_human_messages():
    rules = [(path, rule) for path, node in walk_schema(SCHEMA) for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10
    for path, rule in rules:
        assert rule.get("message"), f"rule at {path} has no message"


def test_given_tempo_bounds_are_the_shared_constants():
    audio = SCHEMA["properties"]["spec"]["properties"]["audio"]
    bpm, offset = audio["properties"]["bpm"], audio["properties"]["beatOffsetSeconds"]
    assert (bpm["type"], bpm["minimum"], bpm["maximum"]) == ("number", BPM_MIN, BPM_MAX)
    assert (offset["type"], offset["minimum"], offset["maximum"]) == (
        "number", BEAT_OFFSET_MIN_SECONDS, BEAT_OFFSET_MAX_SECONDS)
    # `kubectl explain musicvideo.spec.audio.bpm` shows the description, bounds included
    assert f"{BPM_MIN:g} to {BPM_MAX:g}" in bpm["description"]
    assert f"{BEAT_OFFSET_MIN_SECONDS:g} to {BEAT_OFFSET_MAX_SECONDS:g}" in offset["description"]
    assert "requires bpm" in offset["description"]
    assert {"rule": "!has(self.beatOffsetSeconds) || has(self.bpm)",
            "message": "audio.beatOffsetSeconds requires audio.bpm"} in audio["x-kubernetes-validations"]


def test_status_analysis_declares_tempo_source_and_confidence():
    analysis = SCHEMA["properties"]["status"]["properties"]["analysis"]["properties"]
    assert analysis["tempoSource"]["enum"] == list(TEMPO_SOURCES) == ["detected", "given"]
    assert (analysis["confidence"]["type"], analysis["confidence"]["minimum"], analysis["confidence"]["maximum"]) == (
        "number", 0, 1)


def test_bpm_column_shows_with_wide_output():
    (column,) = [c for c in VERSION_DEF["additionalPrinterColumns"] if c["name"] == "BPM"]
    assert column == {**column, "type": "number", "jsonPath": ".status.analysis.tempo", "priority": 1}


def test_printer_columns_point_at_declared_fields():
    columns = {c["name"]: c["jsonPath"] for c in VERSION_DEF["additionalPrinterColumns"]}
    assert {"Phase", "Progress", "Stage", "Attempts", "Age"} <= set(columns)
    for name, json_path in columns.items():
        parts = json_path.lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        assert schema_at(parts) is not None, f"column {name}: {json_path} is not in the schema"


def every_builder_output() -> list[dict[str, Any]]:
    """One patch from every status builder, with every optional field filled."""
    failure = Failure(FailureKind.OOM, "OOMKilled", "killed", 137)
    now, old = T0, {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "x"}]}
    outputs = Outputs({**default_outputs(spec()).output, "sizeBytes": 1, "durationSeconds": 2.0},
                      summary_of({"tempo": 120, "tempoSource": "given", "confidence": 0.5, "beats": [0.5, 1.0],
                                          "sections": [{"start": 0, "end": 1, "label": "intro"}]})[0])
    patches = {
        "accepted": st.accepted(old, spec_hash="h", generation=1, now=now),
        "restarted": st.restarted(old, spec_hash="h", generation=1, now=now),
        "cancelled": st.cancelled(old, message="m", generation=1, now=now),
        "observed": st.observed(1),
        "queued": st.queued(old, reason="Queued", message="m", generation=1, now=now),
        "launched": st.launched(old, attempt=1, job_name="j", memory="1Gi", kueue=False, generation=1, now=now),
        "kueue_admitted": st.kueue_admitted(old, job_name="j", generation=1, now=now),
        "progressing": st.progressing(old, reason="Rendering", message="m", generation=1, now=now),
        "retrying": st.retrying(old, failure=failure, attempt=1, failed_attempts=1, memory="1Gi",
                                next_attempt_at=now, message="m", generation=1, now=now),
        "failed": st.failed(old, reason="r", message="m", failure=failure, attempt=1, generation=1, now=now),
        "succeeded": st.succeeded(old, output=outputs.output, analysis=outputs.analysis, message="m",
                                  generation=1, now=now),
        "suspended": st.suspended(old, message="m", generation=1, now=now),
        "resumed": st.resumed(old, generation=1, now=now),
        "attempt_skipped": st.attempt_skipped(3),
        "last_failure": {"lastFailure": st.last_failure(failure, attempt=1, now=now)},
    }
    builders = {name for name, fn in inspect.getmembers(st, inspect.isfunction)
                if fn.__module__ == st.__name__ and fn.__annotations__.get("return") is st.Patch
                and not name.startswith("_")}  # private helpers are covered through the builders using them
    assert len(builders) >= 12
    assert builders <= set(patches), f"status builders not covered here: {sorted(builders - set(patches))}"
    return list(patches.values())


def every_decision_output() -> list[dict[str, Any]]:
    """Status patches of decide() across the lifecycle (in case a decision writes a field directly)."""
    from tests.operator.operator_factories import applied

    mv = musicvideo()
    patches = []
    mv = applied(mv, plan := step(mv))
    patches.append(plan.status)
    mv = applied(mv, plan := step(mv))
    patches.append(plan.status)
    failed = job(mv, condition="Failed")
    for pods in ([pod(exit_code=137, reason="OOMKilled")], [pod(exit_code=1)], [pod(exit_code=10)], []):
        patches.append(step(mv, job_=failed, pods=pods).status)
    patches.append(step(mv, job_=job(mv, condition="Complete")).status)
    patches.append(step(mv, job_=job(mv), pods=[pod(phase="Running")]).status)
    return patches


@pytest.mark.parametrize("source", [every_builder_output, every_decision_output])
def test_every_status_field_written_is_declared(source):
    for patch in source():
        assert undeclared(patch, ["status"]) == [], patch


def test_renderer_progress_fields_are_declared():
    progress = {"stage": "composing", "percent": 42.5, "framesDone": 10, "framesTotal": 100, "etaSeconds": 3.2,
                "message": "m"}
    assert undeclared({"progress": progress}, ["status"]) == []


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("musicvideo*.yaml")), ids=lambda p: p.name)
def test_examples_use_only_declared_spec_fields(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == f"{GROUP}/{VERSION}" and doc["kind"] == KIND
    assert undeclared(doc["spec"], ["spec"]) == []
    assert doc["spec"]["audio"]["url"].startswith(("s3://", "https://", "http://"))
    assert doc["spec"]["output"]["url"].startswith("s3://")


def test_minimal_example_is_the_demo():
    doc = yaml.safe_load((ROOT / "examples" / "musicvideo.yaml").read_text())
    assert doc["spec"] == {"audio": {"url": "s3://vibecraft/songs/demo.ogg"},
                           "output": {"url": "s3://vibecraft/videos/demo/"}}


def test_every_field_is_explained():
    """`kubectl explain mv.spec.video.fps` never says <no description>; spec fields show bounds and defaults."""
    # metadata: the API server refuses a description there (kubectl explain has its own for it).
    missing = [path for path, node in walk_schema(SCHEMA) if path not in ("", ".metadata") and not node.get("description")]
    assert missing == []
    video = SCHEMA["properties"]["spec"]["properties"]["video"]["properties"]
    assert video["fps"]["description"].endswith("1 to 60. Default: 30.")
    assert "One of: beat, 2beats, bar, phrase." in video["cutEvery"]["description"]
