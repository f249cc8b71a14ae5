"""The control plane's PKI, service-account keys, admin token and kubeconfig."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path

import yaml

from harness.cluster.plane import (
    API_PORT,
    ClusterError,
)


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]}: {result.stderr.strip()}")


def credentials(state: Path, address: str) -> str:
    """A CA, the API server's certificate for `address`, the service-account key pair and an
    admin token (system:masters through --token-auth-file); returns the token."""
    pki = state / "pki"
    token_file = pki / "tokens.csv"
    if token_file.exists() and (pki / f"apiserver-{address}.crt").exists():
        return token_file.read_text().split(",", 1)[0]
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
             "/CN=userapi-test-ca", "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    key, csr, crt = pki / "apiserver.key", pki / "apiserver.csr", pki / f"apiserver-{address}.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", "localhost"]  # fmt: skip
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{address}", "IP:127.0.0.1", "IP:10.96.0.1"])
    extensions = pki / "apiserver.ext"
    extensions.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "30", "-extfile", str(extensions),
             "-out", str(crt))  # fmt: skip
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    token = secrets.token_hex(24)
    token_file.write_text(f'{token},admin,admin,"system:masters"\n')
    return token


def kubelet_client(state: Path) -> tuple[Path, Path]:
    """The certificate the API server shows kubelets (`kubectl logs`, `exec`, `port-forward`):
    signed by the cluster CA, which the node's kubelet trusts for client certificates."""
    pki = state / "pki"
    key, crt = pki / "kubelet-client.key", pki / "kubelet-client.crt"
    if crt.exists():
        return crt, key
    csr = pki / "kubelet-client.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    extensions = pki / "kubelet-client.ext"
    extensions.write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
            "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "30",
            "-extfile", str(extensions), "-out", str(crt))  # fmt: skip
    return crt, key


def kubeconfig(state: Path, address: str, token: str) -> Path:
    ca = base64.b64encode((state / "pki" / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "userapi",
        "clusters": [{"name": "userapi", "cluster": {
            "server": f"https://{address}:{API_PORT}", "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "userapi", "context": {"cluster": "userapi", "user": "admin"}}],
    }  # fmt: skip
    path = state / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o600)
    return path
