"""Downloads of URLs that a tenant chose, guarded against server-side request forgery.

The renderer runs inside the cluster, so a URL in a MusicVideo spec (the audio) or in a model's
output (a generated image; the tenant picks the model) can point at anything the pod can reach:
cloud metadata at 169.254.169.254, the kube-apiserver, other tenants' services, loopback. Fetched
blindly, with the error text ("HTTP 404", "Connection refused") copied into the MusicVideo status,
that is a port scanner for anyone allowed to create a MusicVideo. So every download here:

- accepts only http and https, and follows at most MAX_REDIRECTS redirects itself, checking each
  hop exactly like the first (a public server must not be a trampoline to an internal one);
- resolves the host itself and refuses it when ANY of its addresses is loopback, link-local,
  private, shared (CGNAT), multicast, unspecified or reserved (IPv4-mapped, NAT64 and 6to4 forms
  are judged by the IPv4 address inside), unless the operator allow-listed that network in the env
  named by ENV_EGRESS_ALLOW (on-prem storage);
- connects to the very address it vetted: the URL's host is replaced by the IP while the Host header,
  the TLS SNI and the certificate check stay on the hostname, so a DNS answer that changes between
  the check and the connect (rebinding) cannot move the connection somewhere else;
- bounds the whole download, not each read, by one deadline (a server dripping a byte a second must
  not hold a render until its own deadline), and the size while reading (never the body first);
- fails with ONE message for a refused address, no answer, a slow server and an HTTP error, so the
  status says nothing about what lies behind the URL; what really happened goes to the log (the pod
  log, read by operators). Only "too large" and "not found" (404/410, answered by a host that passed
  the check, so nothing internal) are told apart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol
from urllib.parse import urlparse

from vibecraft_common.resource import ENV_EGRESS_ALLOW

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS: Final = 3
CONNECT_TIMEOUT_S: Final = 10.0  # per connection attempt, and never past the deadline
READ_TIMEOUT_S: Final = 30.0  # per read, and never past the deadline (a watchdog cuts a read at it)
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
NOT_FOUND_STATUSES: Final = frozenset({404, 410})
# The one hint for every network failure: refused, unreachable, slow and HTTP errors look alike.
HINT: Final = "not reachable or not allowed"

_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")  # CGNAT; Python calls it neither private nor global
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the IPv4 is in the low bits


class Sink(Protocol):
    """Where the body goes: an open binary file, an io.BytesIO (never written past max_bytes)."""

    def write(self, data: bytes, /) -> object: ...


class EgressError(Exception):
    """A download failed. str() is what users see: the same text for everything the network may answer
    (refused address, no answer, too slow, an HTTP error), so a MusicVideo status cannot map what the
    renderer can reach. `retryable`: a later attempt may succeed (no answer, 5xx, 429); never set for a
    refused address or a deadline."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFoundError(EgressError):
    """The server, one that passed the address check, answered 404 or 410: the object is not there."""


class TooLargeError(EgressError):
    """The body is larger than the caller's cap (announced, or found while reading)."""


class _Failure(Exception):
    """Internal: why a download failed, for the log only; download() turns it into the generic EgressError."""

    def __init__(self, detail: str, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


class _Hop(NamedTuple):
    """One request's outcome: the bytes written, or where a redirect points."""

    size: int
    location: str | None


def redact(url: str) -> str:
    """A URL fit for logs and status: no credentials, query string or fragment (presigned URLs carry
    their signature in the query)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        return url
    host = parsed.hostname or ""
    if ":" in host:  # IPv6 literal: hostname drops the brackets
        host = f"[{host}]"
    try:
        port = parsed.port
    except ValueError:  # not a number: the URL is broken anyway
        port = None
    return parsed._replace(query="", fragment="", netloc=host + (f":{port}" if port else "")).geturl()


def failure_message(url: str) -> str:
    """The generic message of a failed download of url (what EgressError says)."""
    return f"cannot download {redact(url)}: {HINT}"


def allowed_networks(raw: str | None = None) -> tuple[IPNetwork, ...]:
    """The operator's allow-list: the comma-separated CIDRs in the env named ENV_EGRESS_ALLOW (or `raw`).

    Read at every download, not at import, so tests and long-lived processes see the current value.
    A malformed entry is logged and ignored: the guard fails closed, never open.
    """
    text = os.environ.get(ENV_EGRESS_ALLOW, "") if raw is None else raw
    networks: list[IPNetwork] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            log.error("%s: ignoring %r, which is not a CIDR", ENV_EGRESS_ALLOW, entry)
    return tuple(networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches in the end (mapped, NAT64, 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # Teredo lies in 2001::/32, which is not global: refused as it is


def _rule(ip: IPAddress) -> str | None:
    """The first rule that forbids ip, by name (for the log), or None."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:  # fec0::/10: deprecated, still routable
        return "site-local"
    if ip in _SHARED:
        return "shared address space (100.64.0.0/10)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def refusal(ip: IPAddress, allow: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why the renderer must not connect to ip, or None when it may.

    Unspecified and multicast addresses are refused even when allow-listed (no storage server lives
    there; 0.0.0.0 would reach loopback). An IPv4-mapped address is judged by its IPv4 address only;
    NAT64 and 6to4 addresses by both, as either may be how the packet ends up somewhere internal.
    """
    inner = _embedded_ipv4(ip)
    mapped = isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
    judged: list[IPAddress] = [inner] if mapped and inner is not None else [ip, *([inner] if inner else [])]
    for a in (ip, *judged):
        if a.is_unspecified:
            return "unspecified"
        if a.is_multicast:
            return "multicast"
    if any(a in net for a in (ip, *judged) for net in allow):
        return None
    for a in judged:
        reason = _rule(a)
        if reason:
            return reason if a is ip else f"{reason} (inside {ip})"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Every address of host, in the resolver's order; bounded by timeout (getaddrinfo has none)."""
    if _is_ip(host):
        return [ipaddress.ip_address(host)]
    if timeout <= 0:
        raise _Failure(f"the deadline passed before resolving {host}")
    answers: list[tuple[Any, ...]] = []
    errors: list[OSError] = []

    def work() -> None:
        try:
            answers.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            errors.append(exc)

    resolver = threading.Thread(target=work, name="egress-dns", daemon=True)
    resolver.start()
    resolver.join(timeout)
    if resolver.is_alive():  # left to finish on its own; nothing waits for it
        raise _Failure(f"resolving {host} did not finish before the deadline")
    if errors:
        exc = errors[0]
        again = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
        raise _Failure(f"cannot resolve {host}: {exc}", retryable=again)
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise _Failure(f"{host} resolved to an unparsable address {sockaddr[0]!r}") from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _Failure(f"{host} has no IP address")
    return addresses


def _vet(url: str, allow: tuple[IPNetwork, ...], deadline: float) -> tuple[httpx.URL, list[IPAddress]]:
    """The parsed URL and its addresses, all of them allowed; _Failure (with the rule) otherwise."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _Failure(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise _Failure(f"scheme {parsed.scheme!r} is not http or https")
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
    if not host:
        raise _Failure("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = _resolve(host, port, deadline - time.monotonic())
    for ip in addresses:
        reason = refusal(ip, allow)
        if reason:
            raise _Failure(f"refused {host}: its address {ip} is {reason}")
    return parsed, addresses


class _Watchdog:
    """Shuts the response's socket at the deadline, so a read blocked in the kernel ends then and not one
    read timeout later. The base socket's shutdown() is called even on a TLS socket: it acts on the file
    descriptor only, which is what wakes a blocked read. `fired` tells a body cut short this way from a
    complete one (a body that ends with the connection looks complete to HTTP/1.0)."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        stream = response.extensions.get("network_stream")
        self._sock = stream.get_extra_info("socket") if stream is not None else None
        self.fired = threading.Event()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.fired.set()
        if isinstance(self._sock, socket.socket):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _too_large(shown: str, max_bytes: int, what: str, detail: str) -> TooLargeError:
    log.warning("egress: %s %s not downloaded: %s", what, shown, detail)
    return TooLargeError(f"{shown} is larger than {size_text(max_bytes)}")


def size_text(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _receive(
    response: httpx.Response, url: httpx.URL, sink: Sink, max_bytes: int, deadline: float, what: str, shown: str
) -> _Hop:
    """Act on one response: a redirect's target, or the body streamed into sink."""
    import httpx

    status = response.status_code
    host = url.raw_host.decode("ascii")
    if status in REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise _Failure(f"HTTP {status} from {host} without a Location")
        try:
            return _Hop(0, str(url.join(location)))
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise _Failure(f"HTTP {status} from {host} with a bad Location: {exc}") from None
    if status in NOT_FOUND_STATUSES:
        log.warning("egress: %s %s not found: HTTP %d from %s", what, shown, status, host)
        raise NotFoundError(f"{shown} not found (HTTP {status})")
    if not 200 <= status < 300:
        raise _Failure(f"HTTP {status} from {host}", retryable=status >= 500 or status == 429)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(shown, max_bytes, what, f"{host} announces {declared} bytes")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    # Identity was asked for and the raw bytes are stored: a compressed body is not the file, and inflating it
    # could exceed any cap. Audio and images are not worth compressing; servers compress text.
    if encoding not in ("", "identity"):
        raise _Failure(f"{host} sent Content-Encoding {encoding!r} although identity was asked for")
    watchdog = _Watchdog(response, deadline)
    size = 0

    def late() -> _Failure:
        return _Failure(f"the deadline passed after {size} bytes from {host}")

    try:
        # Raw chunks as the socket delivers them (at most 64 KiB each): the cap and the deadline are
        # checked after every read, not after a buffer fills up (a drip would never fill one).
        for chunk in response.iter_raw():
            if size + len(chunk) > max_bytes:
                raise _too_large(shown, max_bytes, what, f"{host} sent more than {max_bytes} bytes")
            sink.write(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise late()
    except httpx.HTTPError as exc:
        if watchdog.fired.is_set() or time.monotonic() >= deadline:
            raise late() from None
        raise _Failure(f"reading from {host} failed after {size} bytes: {type(exc).__name__}: {exc}", True) from None
    finally:
        watchdog.cancel()
    if watchdog.fired.is_set():  # the cut socket ended a body without a length: it is not complete
        raise late()
    return _Hop(size, None)


def _fetch(
    url: httpx.URL, addresses: list[IPAddress], tls: ssl.SSLContext, sink: Sink, max_bytes: int, deadline: float,
    what: str, shown: str,
) -> _Hop:  # fmt: skip
    """One request, to the first vetted address that accepts a connection (the next on connect errors)."""
    import httpx

    host = url.raw_host.decode("ascii")
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"}
    # SNI and the certificate check name the host, not the IP we connect to (no SNI for an IP literal).
    extensions = {"sni_hostname": host} if url.scheme == "https" and not _is_ip(host) else {}
    last = f"no address of {host} accepted a connection"
    for ip in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure(f"the deadline passed before connecting to {host} ({ip})")
        timeout = httpx.Timeout(min(READ_TIMEOUT_S, remaining), connect=min(CONNECT_TIMEOUT_S, remaining),
                                pool=remaining)  # fmt: skip
        # A client per request: no pooled connection (TLS-checked for another name) is ever reused, and
        # trust_env=False keeps HTTP(S)_PROXY from routing around the address check.
        with httpx.Client(verify=tls, trust_env=False, follow_redirects=False) as client:
            request = client.build_request("GET", url.copy_with(host=str(ip)), headers=headers,
                                           extensions=extensions, timeout=timeout)  # fmt: skip
            try:
                response = client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"connecting to {host} ({ip}) failed: {type(exc).__name__}: {exc}"
                continue
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    raise _Failure(f"the deadline passed waiting for {host} ({ip})") from None
                raise _Failure(f"no answer from {host} ({ip}): {type(exc).__name__}: {exc}", True) from None
            try:
                return _receive(response, url, sink, max_bytes, deadline, what, shown)
            finally:
                response.close()
    raise _Failure(last, retryable=True)


def download(url: str, sink: Sink, *, max_bytes: int, deadline_s: float, what: str) -> int:
    """Fetch an http(s) URL into sink; return the number of bytes written.

    At most max_bytes are ever written (the cap is checked before each write), and resolving,
    connecting, every redirect and the body together take at most deadline_s seconds. `what` names
    the download in the log ("audio input", "generated image").

    Raises NotFoundError (404/410 from an allowed host), TooLargeError, or EgressError with
    failure_message(url) for everything else; the log line says which address, rule or error it was.
    """
    shown = redact(url)
    deadline = time.monotonic() + deadline_s
    try:
        allow = allowed_networks()
        tls = _ssl_context()
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            parsed, addresses = _vet(current, allow, deadline)
            result = _fetch(parsed, addresses, tls, sink, max_bytes, deadline, what, shown)
            if result.location is None:
                return result.size
            if hop < MAX_REDIRECTS:
                log.info("egress: %s %s redirects to %s", what, shown, redact(result.location))
            current = result.location
        raise _Failure(f"more than {MAX_REDIRECTS} redirects (the last to {redact(current)})")
    except _Failure as exc:
        log.warning("egress: %s %s not downloaded: %s", what, shown, exc.detail)
        raise EgressError(failure_message(url), exc.retryable) from None


def _ssl_context() -> ssl.SSLContext:
    """Certificate verification as httpx does it: SSL_CERT_FILE / SSL_CERT_DIR if set (a private CA for
    on-prem storage), else certifi. Made here because the clients run with trust_env=False."""
    import httpx

    return httpx.create_ssl_context(trust_env=True)
