"""The egress guard (vibecraft_renderer.egress): tenant-chosen URLs cannot reach internal addresses.

Self-contained: local servers in threads, no cluster, no S3. Loopback stands in for "internal": a
canary listens on 127.0.0.1 (and ::1) and counts every connection it accepts, while the one server a
download may reach ("allowed", the on-prem storage of the allow-list) listens on 127.0.0.2, which
Linux routes to lo as well, and is the only network in the allow-list.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import httpx
import numpy as np
import pytest
from vibecraft_common.resource import ENV_EGRESS_ALLOW
from vibecraft_renderer import audio, compose, egress, encode, storage, visuals_replicate
from vibecraft_renderer.errors import BadAudioError, DownloadError, InputNotFoundError, ReplicateFailedError

ALLOWED_HOST = "127.0.0.2"
GENERIC = "cannot download <url>: not reachable or not allowed"
BODY = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------- servers


class Canary:
    """A TCP listener that only counts the connections it accepts: it must see none."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Origin:
    """The allowed server. Routes: /ok, /host (echoes the Host header), /to?u=URL (302 there), /loop/N
    (redirects forever), /chain/N (N redirects, then 200), /status/N, /nolocation, /drip (a byte a
    second), /late-byte (one byte just before the test's deadline, then silence), /endless (no end),
    /announced (Content-Length of a terabyte), /gzip."""

    def __init__(self, host: str = ALLOWED_HOST, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.bytes_sent = 0
        self.stop = threading.Event()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _head(self, code: int, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()

            def _send(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                origin.bytes_sent += len(data)

            def do_GET(self) -> None:
                origin.requests.append((self.path, self.headers.get("Host", "")))
                path = urlparse(self.path).path
                parts = path.strip("/").split("/")
                try:
                    if path == "/ok":
                        self._head(200, {"Content-Length": str(len(BODY))})
                        self._send(BODY)
                    elif path == "/host":
                        data = self.headers.get("Host", "").encode()
                        self._head(200, {"Content-Length": str(len(data))})
                        self._send(data)
                    elif path == "/to":
                        target = parse_qs(urlparse(self.path).query)["u"][0]
                        self._head(302, {"Location": target, "Content-Length": "0"})
                    elif parts[0] == "loop":
                        self._head(302, {"Location": f"/loop/{int(parts[1]) + 1}", "Content-Length": "0"})
                    elif parts[0] == "chain":
                        left = int(parts[1])
                        if left:
                            self._head(302, {"Location": f"/chain/{left - 1}", "Content-Length": "0"})
                        else:
                            self._head(200, {"Content-Length": "4"})
                            self._send(b"done")
                    elif parts[0] == "status":
                        self._head(int(parts[1]), {"Content-Length": "0"})
                    elif path == "/nolocation":
                        self._head(302, {"Content-Length": "0"})
                    elif path == "/drip":
                        self._head(200, {"Content-Type": "audio/wav"})
                        while not origin.stop.wait(1.0):
                            self._send(b"x")
                    elif path == "/late-byte":
                        self._head(200, {"Content-Type": "audio/wav"})
                        if not origin.stop.wait(LATE_BYTE_AT_S):
                            self._send(b"x")
                        origin.stop.wait(60)
                    elif path == "/endless":
                        self._head(200, {"Content-Type": "audio/wav"})
                        chunk = b"\0" * 65536
                        while not origin.stop.is_set():
                            self._send(chunk)
                    elif path == "/announced":
                        self._head(200, {"Content-Length": str(10**12)})
                        self._send(b"\0" * 1024)
                    elif path == "/gzip":
                        self._head(200, {"Content-Encoding": "gzip", "Content-Length": "4"})
                        self._send(b"\x1f\x8b\x08\x00")
                    else:
                        self._head(404, {"Content-Length": "0"})
                except OSError:  # the client hung up (size cap, deadline): what these routes wait for
                    pass

        return Handler


LATE_BYTE_AT_S = 3.8


@pytest.fixture(autouse=True)
def allow_only_the_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_EGRESS_ALLOW, f"{ALLOWED_HOST}/32")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary("127.0.0.1")
    yield c
    c.close()


@pytest.fixture
def canary6() -> Iterator[Canary | None]:
    try:
        c = Canary("::1")
    except OSError:
        yield None  # no IPv6 loopback here: the [::1] cases are skipped
        return
    yield c
    c.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host of every request httpx sends (the guard's IP-pinned URLs)."""
    hosts: list[str] = []
    real = httpx.Client.send

    def spy(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        hosts.append(request.url.host)
        return real(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", spy)
    return hosts


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, Callable[[], list[str]]]) -> dict[str, int]:
    """Resolve the given names to what their callables say (counting the lookups); others as usual."""
    real = socket.getaddrinfo
    calls = dict.fromkeys(names, 0)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host in names:
            calls[host] += 1
            out = []
            for ip in names[host]():
                fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
                out.append((fam, socket.SOCK_STREAM, 6, "", (ip, int(port), 0, 0) if ":" in ip else (ip, int(port))))
            return out
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def failure(url: str, deadline_s: float = 10.0, max_bytes: int = 10**6) -> tuple[type[Exception], str, bytes]:
    """Download url, which must fail: the error class, its message with the URL replaced, what was written."""
    sink = io.BytesIO()
    with pytest.raises(egress.EgressError) as exc:
        egress.download(url, sink, max_bytes=max_bytes, deadline_s=deadline_s, what="test")
    return type(exc.value), str(exc.value).replace(egress.redact(url), "<url>"), sink.getvalue()


def redirect(origin: Origin, target: str) -> str:
    return f"{origin.url}/to?u={quote(target, safe='')}"


# ---------------------------------------------------------------- refused addresses


def internal_urls(canary: Canary, canary6: Canary | None) -> list[str]:
    p = canary.port
    urls = [
        f"http://127.0.0.1:{p}/song.wav",
        f"http://localhost:{p}/song.wav",  # a name that resolves to loopback
        f"http://10.0.0.1:{p}/song.wav",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"http://[::ffff:127.0.0.1]:{p}/song.wav",  # IPv4-mapped loopback
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 form of the metadata address
        "http://100.64.0.1/song.wav",
        "http://[fe80::1]/song.wav",
        "http://[fd00::1]/song.wav",
        f"http://0.0.0.0:{p}/song.wav",  # "this host": Linux connects it to loopback
        "http://224.0.0.1/song.wav",
        f"https://127.0.0.1:{p}/song.wav",
        f"http://2130706433:{p}/song.wav",  # 127.0.0.1 spelt as one number
    ]
    if canary6 is not None:
        urls.append(f"http://[::1]:{canary6.port}/song.wav")
    return urls


def test_internal_addresses_are_refused_directly_and_behind_a_redirect(
    origin: Origin, canary: Canary, canary6: Canary | None, sent: list[str]
) -> None:
    urls = internal_urls(canary, canary6)
    for url in urls:
        assert failure(url, deadline_s=5) == (egress.EgressError, GENERIC, b""), url
    assert sent == []  # refused before any request, not after a connection attempt
    for url in urls:
        hop = redirect(origin, url)
        assert failure(hop, deadline_s=5) == (egress.EgressError, GENERIC, b""), url
    assert set(sent) == {ALLOWED_HOST} and len(sent) == len(urls)  # only the allowed server was asked
    assert canary.accepted == 0
    assert canary6 is None or canary6.accepted == 0


def test_a_name_with_any_internal_address_is_refused(
    origin: Origin, canary: Canary, sent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"mixed.example": lambda: [ALLOWED_HOST, "127.0.0.1"]})
    assert failure(f"http://mixed.example:{origin.port}/ok") == (egress.EgressError, GENERIC, b"")
    assert sent == [] and canary.accepted == 0


def test_dns_rebinding_cannot_move_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name resolves to the allowed server once (the check), then to the canary on the same port:
    the download still talks to the address it checked, and never asks the resolver again."""
    for _ in range(20):  # a port free on both addresses
        origin = Origin()
        try:
            canary = Canary("127.0.0.1", origin.port)
            break
        except OSError:
            origin.close()
    else:
        pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")
    try:
        answers = iter([[ALLOWED_HOST]])
        calls = fake_dns(monkeypatch, {"rebind.example": lambda: next(answers, ["127.0.0.1"])})
        sink = io.BytesIO()
        egress.download(f"http://rebind.example:{origin.port}/host", sink, max_bytes=1000, deadline_s=10, what="test")
        assert sink.getvalue() == f"rebind.example:{origin.port}".encode()  # the Host header kept the name
        assert calls == {"rebind.example": 1} and canary.accepted == 0
    finally:
        canary.close()
        origin.close()


def test_every_network_failure_reads_the_same(origin: Origin, canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused, no answer, HTTP errors, odd redirects, an unknown name: one message; the log has the rest."""
    def no_such_host() -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_dns(monkeypatch, {"nowhere.example": no_such_host})
    closed = socket.socket()
    closed.bind((ALLOWED_HOST, 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nobody listens there: connection refused
    cases = [
        f"http://127.0.0.1:{canary.port}/song.wav",  # refused by the guard
        f"http://{ALLOWED_HOST}:{closed_port}/song.wav",  # allowed, nothing listening
        f"{origin.url}/status/500",
        f"{origin.url}/status/403",
        f"{origin.url}/status/401",
        f"{origin.url}/nolocation",
        f"{origin.url}/gzip",
        redirect(origin, "ftp://example.com/song.wav"),
        redirect(origin, "file:///etc/passwd"),
        f"http://nowhere.example:{origin.port}/song.wav",
        "ftp://example.com/song.wav",
    ]
    for url in cases:
        assert failure(url) == (egress.EgressError, GENERIC, b""), url
    assert canary.accepted == 0


def test_at_most_three_redirects(origin: Origin) -> None:
    sink = io.BytesIO()
    assert egress.download(f"{origin.url}/chain/3", sink, max_bytes=100, deadline_s=10, what="test") == 4
    assert sink.getvalue() == b"done"
    before = len(origin.requests)
    assert failure(f"{origin.url}/loop/0") == (egress.EgressError, GENERIC, b"")
    assert [p for p, _ in origin.requests[before:]] == ["/loop/0", "/loop/1", "/loop/2", "/loop/3"]
    assert failure(f"{origin.url}/chain/4") == (egress.EgressError, GENERIC, b"")


# ---------------------------------------------------------------- deadline and size


def test_a_slow_drip_fails_at_the_deadline(origin: Origin) -> None:
    deadline = 2.0
    t0 = time.monotonic()
    kind, message, got = failure(f"{origin.url}/drip", deadline_s=deadline)
    elapsed = time.monotonic() - t0
    assert (kind, message) == (egress.EgressError, GENERIC)
    assert elapsed < deadline + 5, elapsed  # a correctness bound: per-read timeouts alone would never end
    assert len(got) <= 3


def test_a_read_blocked_at_the_deadline_is_cut_then(origin: Origin) -> None:
    """One byte arrives just before the deadline, then nothing: the read after it would wait a whole read
    timeout (the time left when the request started), but the watchdog ends it at the deadline."""
    deadline = 4.0
    t0 = time.monotonic()
    kind, message, got = failure(f"{origin.url}/late-byte", deadline_s=deadline)
    elapsed = time.monotonic() - t0
    assert (kind, message, got) == (egress.EgressError, GENERIC, b"x")
    assert elapsed < LATE_BYTE_AT_S + deadline - 1.0, elapsed  # well before the read timeout would fire


def test_a_body_over_the_cap_stops_at_the_cap(origin: Origin) -> None:
    cap = 256 * 1024
    t0 = time.monotonic()
    kind, message, got = failure(f"{origin.url}/endless", max_bytes=cap, deadline_s=60)
    assert (kind, message) == (egress.TooLargeError, "<url> is larger than 256 KiB")
    assert len(got) <= cap  # never written past the cap
    assert time.monotonic() - t0 < 30  # an endless body: only stopping at the cap ends this
    kind, message, got = failure(f"{origin.url}/announced", max_bytes=cap)
    assert (kind, message, got) == (egress.TooLargeError, "<url> is larger than 256 KiB", b"")


# ---------------------------------------------------------------- what the callers make of it


def test_an_allowed_server_is_downloaded_to_the_file(origin: Origin, tmp_path: Path) -> None:
    path = storage.fetch(f"{origin.url}/ok?X-Amz-Signature=secret", tmp_path)
    assert path.read_bytes() == BODY
    assert origin.requests[-1] == ("/ok?X-Amz-Signature=secret", f"{ALLOWED_HOST}:{origin.port}")


def test_storage_errors(origin: Origin, canary: Canary, tmp_path: Path) -> None:
    url = f"{origin.url}/status/404"
    with pytest.raises(InputNotFoundError, match=r" not found \(HTTP 404\)$"):  # permanent: the server said so
        storage.fetch(url, tmp_path)
    messages = set()
    for bad in (f"http://127.0.0.1:{canary.port}/song.wav?sig=secret", f"{origin.url}/status/503",
                redirect(origin, f"http://127.0.0.1:{canary.port}/status/404")):  # fmt: skip
        with pytest.raises(DownloadError) as exc:
            storage.fetch(bad, tmp_path)
        assert type(exc.value) is DownloadError  # not InputNotFoundError: nothing told about internal hosts
        assert "secret" not in str(exc.value)
        messages.add(str(exc.value).replace(storage.redact(bad), "<url>"))
    assert messages == {GENERIC} and canary.accepted == 0


def test_replicate_output_images_go_through_the_guard(origin: Origin, canary: Canary, tmp_path: Path) -> None:
    images = visuals_replicate.ReplicateImages(str(tmp_path / "cache"), tmp_path, token="r8_x",
                                               base_url="http://127.0.0.1:9", sleep=lambda s: None)  # fmt: skip
    assert images._fetch_output([f"{origin.url}/ok"], visuals_replicate.MAX_IMAGE_BYTES, "generated image") == BODY
    for bad in (f"http://127.0.0.1:{canary.port}/out.png", redirect(origin, "http://169.254.169.254/")):
        with pytest.raises(ReplicateFailedError) as exc:
            images._fetch_output({"images": [bad]}, visuals_replicate.MAX_IMAGE_BYTES, "generated image")
        assert str(exc.value).replace(egress.redact(bad), "<url>") == GENERIC
    before = len(origin.requests)
    with pytest.raises(ReplicateFailedError, match="not reachable or not allowed"):
        # retried: it may recover
        images._fetch_output([f"{origin.url}/status/503"], visuals_replicate.MAX_IMAGE_BYTES, "generated image")
    assert len(origin.requests) - before == visuals_replicate.IMAGE_DOWNLOAD_ATTEMPTS
    with pytest.raises(ReplicateFailedError, match=r"is larger than 64 KiB$"):
        images._fetch_output([f"{origin.url}/endless"], 64 * 1024, "generated image")
    assert canary.accepted == 0


# ---------------------------------------------------------------- the rules themselves


@pytest.mark.parametrize(
    ("ip", "refused"),
    [
        ("93.184.215.14", False), ("2606:4700:4700::1111", False), ("::ffff:8.8.8.8", False),
        ("127.0.0.1", True), ("127.255.0.9", True), ("::1", True), ("10.1.2.3", True), ("172.16.0.1", True),
        ("172.31.255.255", True), ("192.168.1.1", True), ("169.254.169.254", True), ("fe80::1", True),
        ("fc00::1", True), ("fd12::1", True), ("100.64.0.1", True), ("100.127.255.254", True), ("224.0.0.1", True),
        ("ff02::1", True), ("0.0.0.0", True), ("::", True), ("240.0.0.1", True), ("255.255.255.255", True),
        ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", True), ("64:ff9b::a9fe:a9fe", True), ("2002:7f00:1::", True),
        ("2001:db8::1", True), ("fec0::1", True),
    ],
)  # fmt: skip
def test_refusal_rules(ip: str, refused: bool) -> None:
    assert (egress.refusal(ip_address(ip)) is not None) == refused


def test_the_allow_list() -> None:
    allow = egress.allowed_networks(" 10.20.0.0/16, fd00:1::/64,not-a-cidr,,127.0.0.2 ")
    assert [str(n) for n in allow] == ["10.20.0.0/16", "fd00:1::/64", "127.0.0.2/32"]
    assert egress.refusal(ip_address("10.20.3.4"), allow) is None
    assert egress.refusal(ip_address("::ffff:10.20.3.4"), allow) is None
    assert egress.refusal(ip_address("fd00:1::5"), allow) is None
    assert egress.refusal(ip_address("10.21.0.1"), allow) == "private"
    assert egress.refusal(ip_address("127.0.0.1"), allow) == "loopback"
    everything = egress.allowed_networks("0.0.0.0/0,::/0")
    assert egress.refusal(ip_address("0.0.0.0"), everything) == "unspecified"  # never, whatever the list says
    assert egress.refusal(ip_address("224.0.0.1"), everything) == "multicast"
    assert egress.allowed_networks("") == ()


def test_redact() -> None:
    assert egress.redact("https://u:p@[::1]:8443/a.mp3?sig=s#f") == "https://[::1]:8443/a.mp3"
    assert egress.redact("http://host/a.mp3?sig=s") == "http://host/a.mp3"
    assert storage.redact is egress.redact


# ---------------------------------------------------------------- https


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=egress-test.example",
                    "-addext", "subjectAltName=DNS:egress-test.example"],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def test_https_pins_the_address_and_checks_the_name(
    certificate: tuple[Path, Path], canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    snis: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda sock, name, ctx: snis.append(name)
    server = Origin(tls=tls)
    try:
        calls = fake_dns(monkeypatch, {"egress-test.example": lambda: [ALLOWED_HOST],
                                       "other.example": lambda: [ALLOWED_HOST]})  # fmt: skip
        url = f"https://egress-test.example:{server.port}/host"
        assert failure(url) == (egress.EgressError, GENERIC, b"")  # self-signed, not trusted yet
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # a private CA, as for on-prem storage
        sink = io.BytesIO()
        egress.download(url, sink, max_bytes=1000, deadline_s=10, what="test")
        assert sink.getvalue() == f"egress-test.example:{server.port}".encode()  # Host: the name, not the IP
        assert snis[-1] == "egress-test.example"  # SNI too; and the certificate was checked against the name
        assert failure(f"https://other.example:{server.port}/host") == (egress.EgressError, GENERIC, b"")
        assert snis[-1] == "other.example"  # the wrong name for this certificate: refused by verification
        assert calls == {"egress-test.example": 2, "other.example": 1} and canary.accepted == 0
    finally:
        server.close()


# ---------------------------------------------------------------- ffmpeg never fetches for an input


INPUT = Path("/scratch/input-1234-song.ogg")


@pytest.mark.parametrize(
    "command",
    [
        audio.probe_command(INPUT),
        audio.decode_command(INPUT),
        compose.load_image_command(INPUT, 64, 36),
        encode.AudioEncoder.command(INPUT, Path("/scratch/soundtrack.m4a"), 22050),
    ],
    ids=["ffprobe", "decode", "image", "soundtrack"],
)
def test_untrusted_inputs_may_only_open_files_and_pipes(command: list[str]) -> None:
    i = command.index("-i")
    assert command[i - 2 : i + 2] == ["-protocol_whitelist", "file,pipe", "-i", str(INPUT)]
    assert command.count("-i") == 1


def test_a_playlist_posing_as_audio_fetches_nothing(tmp_path: Path, canary: Canary) -> None:
    playlist = tmp_path / "song.ogg"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:{canary.port}/a.ts\n"
                        "#EXT-X-ENDLIST\n")  # fmt: skip
    with pytest.raises(BadAudioError):
        audio.probe(playlist)
    with pytest.raises(ReplicateFailedError):
        compose.load_image(playlist, 64, 36)
    assert canary.accepted == 0
    song = tmp_path / "tone.wav"  # a real file still opens through the whitelist
    with wave.open(str(song), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((3000 * np.sin(np.arange(16000) * 0.2)).astype(np.int16).tobytes())
    info = audio.probe(song)
    assert info.sample_rate == 8000 and info.duration is not None and abs(info.duration - 2.0) < 0.01
    with contextlib.closing(audio.decode_blocks(song)) as blocks:
        assert sum(b.size for b in blocks) == pytest.approx(2.0 * audio.SAMPLE_RATE, abs=100)


def test_only_audio_demuxers_and_image_formats_are_opened(tmp_path: Path) -> None:
    """A concat script posing as a song names local files ffmpeg would open (the protocol whitelist allows
    files): refused by its demuxer. A "generated image" that is not PNG, JPEG, WebP or GIF: refused unread."""
    song = tmp_path / "tone.wav"
    with wave.open(str(song), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((3000 * np.sin(np.arange(16000) * 0.2)).astype(np.int16).tobytes())
    script = tmp_path / "song.ogg"
    script.write_text("ffconcat version 1.0\nfile 'tone.wav'\n")  # a relative name: the demuxer's safe mode allows it
    with pytest.raises(BadAudioError, match=r"not an audio file this renderer reads \(ffmpeg sees concat"):
        audio.probe(script)
    assert audio.probe(song).sample_rate == 8000  # the file it named is fine on its own
    svg = tmp_path / "img-1.img"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="36"/>')
    with pytest.raises(ReplicateFailedError, match="not a PNG, JPEG, WebP or GIF image"):
        compose.load_image(svg, 64, 36)
    assert compose.image_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WebP"
    assert compose.image_format(b"\x89PNG\r\n\x1a\n\x00") == "PNG" and compose.image_format(b"<html>") is None
