"""A running node on loopback and senders for it (real DICOM traffic with pynetdicom)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from deploy.conftest import make_student_bundle
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from pynetdicom import AE

from tea_med.data.phantom_files import write_phantoms
from tea_med.node.config import from_mapping
from tea_med.node.scp import StorageNode

SENDER = "MODALITY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def node_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_student_bundle(tmp_path_factory.mktemp("node_bundle") / "tea_student")


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Twenty-five CR/DX phantoms per split (48 px) written with pydicom."""
    out = tmp_path_factory.mktemp("node_phantoms")
    write_phantoms(out, n=25, size=48, seed=11, formats=("dicom",), grid=False, progress=False)
    return sorted((out / "images").rglob("*.dcm"))


def node_settings(bundle: Path, spool: Path, **extra: Any) -> dict[str, Any]:
    return {
        "bundle": str(bundle),
        "spool": str(spool),
        "port": free_port(),
        "allowed_senders": [{"ae_title": SENDER}],
        "min_free_disk_mb": 1,
        **extra,
    }


@pytest.fixture
def node(node_bundle: Path, tmp_path: Path) -> Iterator[StorageNode]:
    running = StorageNode(from_mapping(node_settings(node_bundle, tmp_path / "spool")))
    running.start()
    yield running
    running.stop()


def send(
    port: int, files: Sequence[Path], calling: str = SENDER, called: str = "TEA_MED"
) -> list[int | None]:
    """C-STORE ``files`` over one association; the status of each (``None``: association refused)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ComputedRadiographyImageStorage)
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return [None] * len(files)
    statuses: list[int | None] = []
    for f in files:
        status = assoc.send_c_store(pydicom.dcmread(f))
        statuses.append(int(status.Status) if status else None)
    assoc.release()
    return statuses


def wait_for(check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the node did not finish in time")
        time.sleep(0.1)
