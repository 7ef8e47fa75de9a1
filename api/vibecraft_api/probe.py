"""The API container's readiness probe: GET /readyz and print why it is not ready.

The kubelet's httpGet probe records only "HTTP probe failed with statuscode: 503". An exec probe's
output is the message of the pod's Unhealthy event (`kubectl describe pod`, `kubectl get events`), so
the reason reaches the user: "not ready: apiKeys: not loaded" says what to do next. The chart runs
`python -m vibecraft_api.probe http://127.0.0.1:<port>/readyz` every period, so this imports only the
standard library (vibecraft_api/__init__.py is empty).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # /readyz waits up to 3 s for a dependency; the chart gives the probe 5 s


def reason(status: int, body: bytes) -> str:
    """One line from a /readyz answer: the checks that are not "ok", else the status and body."""
    try:
        checks = json.loads(body).get("checks", {})
        failing = [f"{name}: {value}" for name, value in checks.items() if value != "ok"]
    except (ValueError, AttributeError):
        failing = []
    return "; ".join(failing) if failing else f"HTTP {status}: {body[:200].decode(errors='replace')}"


def probe(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """(ready, what to print)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True, "ready"
    except urllib.error.HTTPError as exc:
        return False, f"not ready: {reason(exc.code, exc.read())}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"not ready: {url} does not answer ({getattr(exc, 'reason', exc)})"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vibecraft_api.probe URL", file=sys.stderr)
        return 2
    ready, said = probe(args[0])
    print(said)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
