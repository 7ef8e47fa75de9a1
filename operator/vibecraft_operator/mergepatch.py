"""JSON merge patches (RFC 7386) as the API server applies them, and composing two into one."""

from collections.abc import Mapping
from typing import Any


def apply_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`target` after the RFC 7386 merge patch (what the API server does with our status patches)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            prior = out.get(key)
            out[key] = apply_patch(prior if isinstance(prior, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def compose(base: Mapping[str, Any], first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """One merge patch doing to `base` what `first` then `second` do, so folded steps write once."""
    out = dict(first)
    for key, value in second.items():
        prior, old = first.get(key), base.get(key)
        if not isinstance(value, Mapping) or key not in first:
            out[key] = value
        elif isinstance(prior, Mapping):
            out[key] = compose(old if isinstance(old, Mapping) else {}, prior, value)
        else:  # `first` removed or replaced the object: what `second` builds starts from nothing
            out[key] = _replacing(old, apply_patch({}, value))
    return out


def _replacing(old: Any, new: Mapping[str, Any]) -> Any:
    """A merge patch turning `old` into exactly `new`."""
    if not isinstance(old, Mapping):
        return dict(new)
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        patch[key] = _replacing(old.get(key), value) if isinstance(value, Mapping) else value
    return patch
