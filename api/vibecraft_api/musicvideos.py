"""MusicVideo objects in tenant namespaces: the API's only Kubernetes writes (create and delete)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Any

from vibecraft_common.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION

from vibecraft_api.errors import (
    BadRequest,
    Conflict,
    FieldIssue,
    Gone,
    InvalidInput,
    KubeError,
    NotFound,
    QuotaExceeded,
    TenantNotProvisioned,
    Unavailable,
)
from vibecraft_api.kube import Kube

Obj = dict[str, Any]
LIST_PAGE = 250  # objects per Kubernetes list request
CACHE_NOT_READY = frozenset({429, 503, 504})  # what a list served from the watch cache answers before it is ready
MAX_PAGES_PER_REQUEST = 8  # bounds the work of one filtered list request; the rest comes with `continue`
NAMESPACE_KNOWN_SECONDS = 60.0  # a namespace seen to exist is not probed again for this long
# Dry-run created to learn whether a namespace exists (the API may not read namespaces): the API server
# checks RBAC (403), then the namespace (404, kind namespaces), then the object (422: it has no spec).
PROBE: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"generateName": "namespace-probe-"}}


def collection(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def not_provisioned(namespace: str) -> TenantNotProvisioned:
    return TenantNotProvisioned(
        f"Your account's namespace {namespace} does not exist yet; ask an administrator to create it.")


def missing_namespace(exc: KubeError) -> bool:
    """The request failed because its namespace does not exist (not because an object does not)."""
    return exc.code == 404 and exc.kind == "namespaces"


def policy_denial(exc: KubeError) -> InvalidInput | None:
    """A MusicVideo an admission policy refused (the chart's tenancy policy: a Replicate model or
    PriorityClass this installation does not allow): the client's mistake, in the policy's own words,
    not a setup problem (its 403 would otherwise read as "account not set up")."""
    marker = "denied request: "
    if exc.code not in (403, 422) or "ValidatingAdmissionPolicy" not in exc.message or marker not in exc.message:
        return None
    detail = exc.message.split(marker, 1)[1].strip()
    first = detail.split(" ", 1)[0]
    field = first.removeprefix("spec.") if first.startswith("spec.") else ""
    return InvalidInput(detail, errors=[FieldIssue(field, detail)])


def unavailable(exc: KubeError) -> Unavailable:
    if exc.code == 0:
        return Unavailable("The Kubernetes API is unreachable; try again shortly.")
    if exc.code == 403:
        # With per-tenant RoleBindings (the Helm chart's way), a tenant nobody set up looks like this.
        return TenantNotProvisioned("Your account is not fully set up yet (no access to its namespace); "
                                    "ask an administrator.")
    if exc.code == 401:
        return Unavailable("The API's credentials for the cluster are not accepted.")
    return Unavailable(f"The Kubernetes API failed ({exc.code} {exc.reason}).")


def encode_continue(k8s_continue: str, resource_version: str, offset: int) -> str:
    raw = json.dumps({"c": k8s_continue, "rv": resource_version, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, str, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        k8s, rv, offset = data["c"], data["rv"], data["o"]
        if isinstance(k8s, str) and isinstance(rv, str) and isinstance(offset, int) and not isinstance(offset, bool) \
                and 0 <= offset < LIST_PAGE and (k8s or rv.isdigit()):
            return k8s, rv, offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise BadRequest("The continue token is not valid; start the listing again without it.")


class MusicVideos:
    """CRUD on MusicVideos; Kubernetes errors become problems the client can act on."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.namespaces_seen: dict[str, float] = {}  # namespace → when it was last seen to exist (monotonic)

    async def check_namespace(self, namespace: str) -> None:
        """TenantNotProvisioned if the namespace does not exist or the API may not use it.

        For the answers that cannot tell a missing namespace from an empty one (a 404 for one object,
        an empty list). Only a clear answer raises: anything else leaves the caller's answer standing.
        """
        seen = self.namespaces_seen.get(namespace)
        if seen is not None and time.monotonic() - seen < NAMESPACE_KNOWN_SECONDS:
            return
        try:
            await self.kube.request("POST", collection(namespace), params={"dryRun": "All"}, body=PROBE)
        except KubeError as exc:
            if missing_namespace(exc):
                raise not_provisioned(namespace) from None
            if exc.code == 403:
                raise unavailable(exc) from None
            if exc.code != 422:
                return  # no answer either way (unreachable, a webhook...): not remembered
        self.namespaces_seen[namespace] = time.monotonic()

    async def get(self, namespace: str, name: str) -> Obj:
        try:
            return await self.kube.get(f"{collection(namespace)}/{name}")
        except KubeError as exc:
            if exc.code == 404:
                await self.check_namespace(namespace)
                raise NotFound(f"There is no video {name}.") from None
            raise unavailable(exc) from None

    async def create(self, namespace: str, body: Obj) -> Obj:
        try:
            return await self.kube.request("POST", collection(namespace), body=body)
        except KubeError as exc:
            if missing_namespace(exc):
                self.namespaces_seen.pop(namespace, None)
                raise not_provisioned(namespace) from None
            if (refused := policy_denial(exc)) is not None:
                raise refused from None
            if exc.code == 403 and "exceeded quota" in exc.message:
                raise QuotaExceeded("Your account keeps as many videos as its quota allows; delete some, "
                                    f"then try again (limited: {exc.message.rsplit(': ', 1)[-1]}).") from None
            if exc.code == 403 and "status unknown for quota" in exc.message:  # a new quota not counted yet
                raise Unavailable("Your account's quota is being counted; try again in a few seconds.") from None
            if exc.code == 422:
                # A rule the API's models missed: the API server's own words, per field.
                issues = [FieldIssue(c.get("field", "").removeprefix("spec."), c.get("message", exc.message))
                          for c in exc.causes] or [FieldIssue("", exc.message)]
                raise InvalidInput("; ".join(f"{i.field}: {i.detail}" for i in issues), errors=issues) from None
            raise unavailable(exc) from None

    async def patch_spec(self, namespace: str, name: str, spec: Obj, resource_version: str,
                         labels: Obj | None = None) -> Obj:
        """Change spec fields (and labels) with a JSON merge patch of the version read: Conflict when it changed."""
        meta: Obj = {"resourceVersion": resource_version, **({"labels": labels} if labels else {})}
        try:
            return await self.kube.request("PATCH", f"{collection(namespace)}/{name}",
                                           body={"metadata": meta, "spec": spec})
        except KubeError as exc:
            if exc.code == 404:
                raise NotFound(f"There is no video {name}.") from None
            if exc.code == 409:
                raise Conflict("The video changed meanwhile; read it and try again.") from None
            if (refused := policy_denial(exc)) is not None:
                raise refused from None
            raise unavailable(exc) from None

    async def delete(self, namespace: str, name: str) -> Obj | None:
        """Delete the video: the object while finalizers hold it, None once it is gone.

        The operator's finalizer stops the render, waits for its pods, then removes its files: all of
        them for a video the API made (ANNOTATION_DELETE_OUTPUTS, set at creation: the API cannot
        patch MusicVideos), and the object goes only then. Until that moment it is listed (the operator
        takes LABEL_FINISHED off it) and counts as a render in progress.
        """
        try:
            # Background: the operator's finalizer and the garbage collector stop and remove the Job.
            gone = await self.kube.request("DELETE", f"{collection(namespace)}/{name}",
                                           body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.code == 404:
                await self.check_namespace(namespace)
                raise NotFound(f"There is no video {name}.") from None
            raise unavailable(exc) from None
        return gone if gone.get("kind") == KIND else None  # a Status once the object is gone already

    async def _list(self, namespace: str, params: dict[str, Any], *, cache_fallback: bool = False) -> Obj:
        try:
            return await self.kube.get(collection(namespace), params=params)
        except KubeError as exc:
            if cache_fallback and exc.code in CACHE_NOT_READY:
                # The watch cache is (re)initializing (a CRD just installed, an API server restarted): it
                # answers 429 "storage is (re)initializing". Read etcd instead: slower, never wrong.
                return await self._list(namespace, {"labelSelector": params["labelSelector"]})
            if exc.code == 410:
                raise Gone("The listing expired; start again without a continue token.") from None
            if exc.code == 404:
                return {"items": [], "metadata": {}}  # no namespace (yet): no videos
            if exc.code in (400, 422) and params.get("continue"):
                raise BadRequest("The continue token is not valid; start the listing again without it.") from None
            raise unavailable(exc) from None

    async def selected(self, namespace: str, label_selector: str, not_older_than: str | None = None) -> list[Obj]:
        """The MusicVideos with these labels, from the API server's watch cache, at least as new as the
        resourceVersion `not_older_than` (this process's last write there; None: any recent state).

        Not a plain consistent list: kube-apiserver serves that from etcd when it cannot prove its cache
        current (etcd before 3.5.13, as here), and a label selector is applied after reading the whole
        namespace, 250 objects a page: 5 s for 10 000 finished videos when 3 match. From the cache the
        same answer takes milliseconds, and NotOlderThan our own last write still includes it. Unpaged:
        the selectors used match few objects (and the tenant's ResourceQuota bounds them all).
        """
        params = {"labelSelector": label_selector, "resourceVersion": not_older_than or "0",
                  "resourceVersionMatch": "NotOlderThan"}
        return list((await self._list(namespace, params, cache_fallback=True)).get("items") or [])

    async def page(self, namespace: str, *, limit: int, token: str | None,
                   keep: Callable[[Obj], bool]) -> tuple[list[Obj], str | None]:
        """Up to `limit` (<= LIST_PAGE) objects that `keep` accepts, and a token for the next page (None at the end).

        Kubernetes pages are always LIST_PAGE long and hold more matches than the client asked for, so
        the token is (Kubernetes continue token or resourceVersion of the page being read, offset in
        it): the next request reads the same page again, from the same consistent snapshot
        (`continue`, or resourceVersionMatch=Exact for the first page), and skips what it returned.
        """
        k8s_token, rv, offset = decode_continue(token) if token else ("", "", 0)
        out: list[Obj] = []
        for _ in range(MAX_PAGES_PER_REQUEST):
            params: dict[str, Any] = {"limit": LIST_PAGE}
            if k8s_token:
                params["continue"] = k8s_token
            elif rv:
                params.update(resourceVersion=rv, resourceVersionMatch="Exact")
            page = await self._list(namespace, params)
            items = page.get("items") or []
            meta = page.get("metadata") or {}
            next_token, rv = meta.get("continue") or "", str(meta.get("resourceVersion") or rv)
            if not token and not items and not next_token:
                await self.check_namespace(namespace)  # no videos at all: is there a namespace?
            for index in range(offset, len(items)):
                if keep(items[index]):
                    out.append(items[index])
                    if len(out) == limit:
                        if index + 1 < len(items):
                            return out, encode_continue(k8s_token, rv, index + 1)
                        return out, encode_continue(next_token, rv, 0) if next_token else None
            if not next_token:
                return out, None
            k8s_token, offset = next_token, 0
        return out, encode_continue(k8s_token, rv, offset)
