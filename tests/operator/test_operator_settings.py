"""The operator's settings come from VIBECRAFT_* env vars and refuse nonsense."""

import pytest
from pydantic import ValidationError
from vibecraft_operator.main import parse_args
from vibecraft_operator.settings import Settings


def test_env_vars(monkeypatch):
    monkeypatch.setenv("VIBECRAFT_RENDERER_IMAGE", "registry:5000/vibecraft/renderer:1.2.3")
    monkeypatch.setenv("VIBECRAFT_MAX_RUNNING", "4")
    monkeypatch.setenv("VIBECRAFT_MAX_RUNNING_PER_NAMESPACE", "2")
    monkeypatch.setenv("VIBECRAFT_NAMESPACES", "music, video ,")
    monkeypatch.setenv("VIBECRAFT_DEFAULT_MAX_MEMORY", "16Gi")
    monkeypatch.setenv("VIBECRAFT_STANDALONE", "true")
    monkeypatch.setenv("VIBECRAFT_RENDERER_COMMAND", '["python3", "-m", "wrapper"]')
    s = Settings()
    assert s.renderer_image == "registry:5000/vibecraft/renderer:1.2.3"
    assert (s.max_running, s.max_running_per_namespace) == (4, 2)
    assert s.namespaces == ["music", "video"]
    assert s.default_max_memory == "16Gi" and s.standalone
    assert s.renderer_command == ["python3", "-m", "wrapper"]


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("VIBECRAFT_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.renderer_image == "vibecraft/renderer:0.1.0"
    assert s.renderer_service_account == "vibecraft-renderer"
    assert s.max_running == 0 and s.namespaces == [] and s.metrics_port == 9090


@pytest.mark.parametrize(("key", "value"), [("VIBECRAFT_DEFAULT_MEMORY", "lots"), ("VIBECRAFT_MAX_RUNNING", "-1"),
                                            ("VIBECRAFT_LOG_FORMAT", "xml")])
def test_invalid_values_are_refused(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings()


def test_cli_flags_default_to_settings():
    s = Settings(liveness_endpoint="http://0.0.0.0:1/healthz", peering_priority=5, log_format="plain")
    args = parse_args([], s)
    assert (args.liveness, args.priority, args.log_format, args.standalone) == ("http://0.0.0.0:1/healthz", 5,
                                                                                "plain", False)
    args = parse_args(["-n", "a", "-n", "b", "--standalone", "--priority", "100"], s)
    assert args.namespaces == ["a", "b"] and args.standalone and args.priority == 100
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "x"], s)
