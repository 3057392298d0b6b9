"""DICOM over TLS: a sender with a certificate from the site CA stores; one without is refused.
Certificates are made with the openssl command line, as docs describe."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pydicom
import pytest
from node.conftest import SENDER, node_settings
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from pynetdicom import AE

from tea_med.node.config import from_mapping
from tea_med.node.scp import StorageNode


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=tea_med test CA",
        cwd=folder,
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("node", "sender"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=folder,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            cwd=folder,
        )


def _store(port: int, files: list[Path], context: ssl.SSLContext) -> list[int | None]:
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(ComputedRadiographyImageStorage)
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title="TEA_MED", tls_args=(context, "127.0.0.1"))
    if not assoc.is_established:
        return [None] * len(files)
    statuses = [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    assoc.release()
    return statuses


@pytest.mark.integration
def test_tls_senders_need_a_certificate_from_the_site_ca(
    node_bundle: Path, tmp_path: Path, phantom_files: list[Path]
) -> None:
    assert shutil.which("openssl"), "the openssl command line is needed to make test certificates"
    certs = tmp_path / "certs"
    certs.mkdir()
    _certificates(certs)
    tls = {
        "certificate": str(certs / "node.crt"),
        "private_key": str(certs / "node.key"),
        "ca_certificates": str(certs / "ca.crt"),
    }
    node = StorageNode(from_mapping(node_settings(node_bundle, tmp_path / "spool", tls=tls)))
    node.start()
    try:
        trusted = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.crt"))
        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.crt"))
        trusted.load_cert_chain(str(certs / "sender.crt"), str(certs / "sender.key"))
        assert _store(node.config.port, phantom_files[:2], trusted) == [0, 0]
        assert _store(node.config.port, phantom_files[2:3], anonymous) == [None]
    finally:
        node.stop()
    assert node.stored == 2
