"""Reading a render's outputs back: analysis.json is summarised tolerantly; S3 trouble is a warning."""

import pytest
from vibecraft_common.status import summary_of
from vibecraft_operator.errors import OutputsUnavailable
from vibecraft_operator.outputs import fetch_outputs, split_s3_url

from tests.operator.operator_factories import settings, spec


def test_summary_of_the_renderers_document():
    doc = {
        "tempo": 123.046875,
        "beats": [0.1, 0.6, 1.1],
        "duration": 61.25,
        "sections": [{"start": 0, "end": 12.5, "label": "intro", "energy": 0.3},
                     {"start": 12.5, "end": 30.0, "label": "A"}],
    }
    analysis, duration = summary_of(doc)
    assert analysis == {"tempo": 123.05, "beats": 3,
                        "sections": [{"start": 0, "end": 12.5, "label": "intro"},
                                     {"start": 12.5, "end": 30.0, "label": "A"}]}
    assert duration == 61.25


def test_summary_reads_one_spelling_and_drops_junk():
    # The renderer writes exactly one name per field: other spellings are not guessed.
    analysis, duration = summary_of({"audio": {"bpm": 90, "durationSeconds": 10}, "beat_count": 15,
                                     "sections": ["junk", {"start": 1}]})
    assert analysis == {"sections": []}
    assert duration is None
    assert summary_of({}) == ({}, None)
    assert summary_of({"tempo": True, "beats": "many", "duration": True}) == ({}, None)


def test_tempo_source_and_confidence_are_read_from_the_renderers_keys_only():
    analysis, _ = summary_of({"tempo": 97, "tempoSource": "given", "confidence": 1, "beats": [0.1]})
    assert analysis == {"tempo": 97.0, "tempoSource": "given", "confidence": 1.0, "beats": 1}
    analysis, _ = summary_of({"tempo": 120.004, "tempoSource": "detected", "confidence": 0.61234})
    assert analysis == {"tempo": 120.0, "tempoSource": "detected", "confidence": 0.612}
    # other spellings are not guessed
    assert summary_of({"tempo_source": "given", "source": "given", "tempoConfidence": 0.5,
                               "audio": {"tempoSource": "given", "confidence": 0.5}})[0] == {}


@pytest.mark.parametrize("doc", [
    {"tempoSource": "guessed"}, {"tempoSource": "Given"}, {"tempoSource": 1},
    {"confidence": 1.5}, {"confidence": -0.1}, {"confidence": True}, {"confidence": "high"}, {"confidence": None},
    {"beatsPerBar": 5}, {"beatsPerBar": 3.0}, {"beatsPerBar": "3"},
], ids=str)
def test_values_the_crd_would_refuse_are_left_out(doc):
    """status.analysis.tempoSource is an enum and confidence is 0..1: one bad value must not sink the whole patch."""
    assert summary_of({"tempo": 100, **doc})[0] == {"tempo": 100.0}


def test_the_meter_is_summarised():
    assert summary_of({"tempo": 168, "beatsPerBar": 3})[0] == {"tempo": 168.0, "beatsPerBar": 3}


def test_sections_are_capped():
    analysis, _ = summary_of({"sections": [{"start": i, "end": i + 1} for i in range(500)]})
    assert len(analysis["sections"]) == 64 and analysis["sections"][3] == {"start": 3, "end": 4}


def test_split_s3_url():
    assert split_s3_url("s3://vibecraft/videos/demo/video.mp4") == ("vibecraft", "videos/demo/video.mp4")
    with pytest.raises(OutputsUnavailable):
        split_s3_url("https://example.com/x")


def test_unreachable_s3_gives_urls_and_a_warning_not_an_error():
    cfg = settings(s3_endpoint="http://127.0.0.1:9", outputs_timeout_seconds=1)
    outputs = fetch_outputs(spec(), cfg)
    assert outputs.output["videoUrl"] == "s3://vibecraft/videos/demo/video.mp4"
    assert outputs.analysis is None and outputs.warning and "S3" in outputs.warning


def test_fetching_can_be_turned_off():
    outputs = fetch_outputs(spec(), settings(fetch_outputs=False))
    assert outputs.warning is None and "sizeBytes" not in outputs.output
