"""Certificates and keys for secure serving, client auth and service-account tokens (via openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_SANS = (
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)

# (file stem, CN, O) for client certificates; the names are the ones kubeadm uses, so the
# bootstrap RBAC the API server ships grants each component exactly its usual rights.
CLIENTS = (
    ("admin", "kubernetes-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", ""),
    ("scheduler", "system:kube-scheduler", ""),
)


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _sign(d: Path, stem: str, subj: str, ext: str | None = None) -> None:
    _run("genrsa", "-out", str(d / f"{stem}.key"), "2048")
    _run("req", "-new", "-key", str(d / f"{stem}.key"), "-subj", subj, "-out", str(d / f"{stem}.csr"))
    args = ["x509", "-req", "-in", str(d / f"{stem}.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
            str(d / "ca.key"), "-CAcreateserial", "-days", "3650", "-out", str(d / f"{stem}.crt")]
    if ext:
        (d / f"{stem}.ext").write_text(ext)
        args += ["-extfile", str(d / f"{stem}.ext")]
    _run(*args)


def node_client_name(node: str) -> tuple[str, str]:
    return f"system:node:{node}", "system:nodes"


def ensure_certs(d: Path, node: str) -> None:
    """Create the CA, serving cert and client certs once; later calls reuse them."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / "done").exists():
        return
    _run("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(d / "ca.key"),
         "-subj", "/CN=vibecraft-local-ca", "-days", "3650", "-out", str(d / "ca.crt"))
    _sign(d, "apiserver", "/CN=kube-apiserver",
          f"subjectAltName={SERVER_SANS}\nextendedKeyUsage=serverAuth\n")
    clients = [*CLIENTS, ("node", *node_client_name(node))]
    for stem, cn, org in clients:
        subj = f"/CN={cn}" + (f"/O={org}" if org else "")
        _sign(d, stem, subj, "extendedKeyUsage=clientAuth\n")
    _run("genrsa", "-out", str(d / "sa.key"), "2048")
    _run("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
    (d / "done").write_text("ok\n")


def kubeconfig(server: str, ca: Path, cert: Path | None, key: Path | None, token: str | None = None,
               user: str = "user") -> str:
    """A kubeconfig with embedded file paths (client cert) or a bearer token."""
    auth = f"    token: {token}\n" if token else (
        f"    client-certificate: {cert}\n    client-key: {key}\n")
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: vibecraft-local\n  cluster:\n"
        f"    server: {server}\n    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{auth}"
        f"contexts:\n- name: vibecraft-local\n  context:\n    cluster: vibecraft-local\n    user: {user}\n"
        "current-context: vibecraft-local\n"
    )
