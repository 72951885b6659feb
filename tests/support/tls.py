"""A self-signed CA and a broker certificate for 127.0.0.1/localhost, made with openssl for a test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr[-2000:]}"


def make_ca(folder: Path, name: str = "ca") -> Path:
    """A CA: <name>.pem (certificate) and <name>.key; returns the certificate."""
    assert shutil.which("openssl"), "these tests make certificates with openssl (apt-get install openssl)"
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN=sensorstream test {name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=folder,
    )
    return folder / f"{name}.pem"


def make_broker_tls(folder: Path) -> Path:
    """What `local up --sasl-ssl DIR` reads: ca.pem, and broker.pem/broker.key signed by it for
    127.0.0.1 and localhost (the names clients check). Returns the folder."""
    make_ca(folder)
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        cwd=folder,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "broker.pem",
        cwd=folder,
    )
    return folder
