"""What the tests and the benches share: waiting for a condition, free ports, kubectl, the MusicVideo CRD,
and the operator (or any Python service) as a subprocess.

Plain functions and classes, no pytest: bench/ imports this as `tests.harness` (its scripts put the
repository root on sys.path first). The pytest fixtures built on it live in the conftest.py files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from vibecraft_common.resource import GROUP, PLURAL
from vibecraft_localcluster.config import find_tool, free_port

__all__ = ["CRD", "ROOT", "OperatorProcess", "Service", "WaitTimeout", "free_port", "install_crd", "kubectl",
           "wait_for"]

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "musicvideo.yaml"

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """wait_for() gave up: an assertion failure to pytest, an error to a bench."""


def wait_for(predicate: Callable[[], T], timeout: float = 90, interval: float = 0.3,
             what: str | Callable[[], str] = "condition") -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    It is called at least once, and once more when `timeout` seconds have passed; then WaitTimeout says
    what was awaited (`what`, or what it returns when called then, e.g. with a log tail) and the last
    value. An exception from `predicate` (say, an assertion that a process still runs) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    described = what() if callable(what) else what
    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {described} (last: {last!r})")


def kubectl(kubeconfig: str | os.PathLike[str], *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run kubectl against a cluster; with `check`, a failure is an AssertionError carrying its stderr."""
    res = subprocess.run([find_tool("kubectl"), f"--kubeconfig={kubeconfig}", *args],
                         capture_output=True, text=True, input=input, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
    return res


def install_crd(kubeconfig: str | os.PathLike[str]) -> None:
    """Apply crds/musicvideo.yaml and wait until the API server serves it."""
    kubectl(kubeconfig, "apply", "-f", str(CRD))
    kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")


class Service:
    """A Python service in a subprocess (a session of its own), started once `probe_url` answers 200.

    Output goes to `log` (appended to, across restarts) or, without one, to this process's own.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], probe_url: str, log: Path | None = None,
                 name: str = "the service") -> None:
        self.argv, self.env, self.probe_url, self.log, self.name = list(argv), dict(env), probe_url, log, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, interval: float = 0.2) -> None:
        if self.log is None:
            self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        else:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        wait_for(self.ready, timeout=timeout, interval=interval, what=f"{self.name} to answer {self.probe_url}"
                 + (f" (log: {self.log})" if self.log else ""))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.exists() else ""

    def ready(self) -> bool:
        """Whether the probe answers 200; an AssertionError if the process has exited."""
        assert self.proc is not None, f"{self.name} not started"
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(self.probe_url, timeout=2) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal the process group; SIGKILL it if it has not exited after `timeout` seconds."""
        if not self.running:
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class OperatorProcess(Service):
    """`python -m vibecraft_operator.main` watching `namespaces`, live once its liveness endpoint answers.

    `env` adds to (and overrides) this process's environment; a value "" removes the variable, so the
    operator uses its default. `args` come before the namespaces (peering: `--standalone` or
    `--priority N`). With `metrics`, it serves /metrics on `metrics_port`.
    """

    def __init__(self, kubeconfig: str | os.PathLike[str], namespaces: Sequence[str], log: Path, *,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = ("--standalone",),
                 metrics: bool = False) -> None:
        self.namespaces = list(namespaces)
        self.health_port = free_port()
        self.metrics_port = free_port() if metrics else 0
        full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "VIBECRAFT_METRICS_PORT": str(self.metrics_port),
                    "VIBECRAFT_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health_port}/healthz", **(env or {})}
        argv = [sys.executable, "-m", "vibecraft_operator.main", *args,
                *(arg for ns in self.namespaces for arg in ("-n", ns))]
        super().__init__(argv, {k: v for k, v in full_env.items() if v != ""},
                         f"http://127.0.0.1:{self.health_port}/healthz", log, name="the operator")

    @property
    def namespace(self) -> str:
        """The (first) namespace it watches."""
        return self.namespaces[0]

    def metrics(self) -> str:
        assert self.metrics_port, "started without metrics"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
            return str(rsp.read().decode())
