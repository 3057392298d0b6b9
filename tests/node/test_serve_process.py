"""``tea-med serve`` as its own process: killed with SIGKILL mid-stream it loses no acknowledged
instance and gives none two results; SIGTERM stops it cleanly. And dcmtk as an independent sender."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from node.conftest import SENDER, free_port, send, wait_for
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from pynetdicom import AE

from tea_med.node.scp import StorageNode


def _start(bundle: Path, spool: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tea_med.cli", "serve", "--bundle", str(bundle), "--spool", str(spool)]
    command += ["--port", str(port), "--allow", SENDER, "--log-file", str(log)]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            raise RuntimeError(
                f"tea-med serve exited with {proc.returncode}: {log.read_text() if log.exists() else ''}"
            )
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError("tea-med serve did not open its port")


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:  # stop the whole process group whatever happened
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _results(spool: Path) -> list[str]:
    return [
        json.loads(line)["sop_instance_uid"]
        for line in (spool / "predictions.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_instance_and_duplicates_none(
    node_bundle: Path, phantom_files: list[Path], tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    spool, port = tmp_path / "spool", free_port()
    files = phantom_files[:25]
    proc = _start(node_bundle, spool, port, tmp_path / "node1.log")
    cleanup.append(proc)
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(ComputedRadiographyImageStorage)
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title="TEA_MED")
    acknowledged, refused = [], []
    for i, f in enumerate(files):
        if i == 12:
            os.killpg(proc.pid, signal.SIGKILL)  # the power cut
            proc.wait()
        try:
            status = assoc.send_c_store(pydicom.dcmread(f)) if assoc.is_established else None
        except Exception:  # the association is gone
            status = None
        (acknowledged if status and status.Status == 0 else refused).append(f)
    assert len(acknowledged) == 12 and len(refused) == 13
    proc = _start(node_bundle, spool, port, tmp_path / "node2.log")  # the restart resumes the spool
    cleanup.append(proc)
    acked = {pydicom.dcmread(f).SOPInstanceUID for f in acknowledged}
    wait_for(lambda: acked <= set(_results(spool)) and not list((spool / "incoming").glob("*.dcm")))
    assert send(port, refused) == [0] * len(refused)  # what was not acknowledged can be sent again
    everything = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    wait_for(lambda: set(_results(spool)) == everything)
    time.sleep(1.0)
    results = _results(spool)
    assert len(results) == len(set(results)) == 25
    proc.send_signal(signal.SIGTERM)  # a clean stop
    assert proc.wait(timeout=120) == 0
    log = (tmp_path / "node2.log").read_text()
    assert "stopped (" in log and "stored (0x0000)" in log


@pytest.mark.integration
def test_dcmtk_echoscu_and_storescu_are_served_and_strangers_refused(
    node: StorageNode, phantom_files: list[Path]
) -> None:
    for tool in ("echoscu", "storescu"):
        assert shutil.which(tool), f"{tool} (Debian package dcmtk) is needed: apt-get install dcmtk"
    port = str(node.config.port)
    echo = subprocess.run(
        ["echoscu", "-aet", SENDER, "-aec", "TEA_MED", "127.0.0.1", port], capture_output=True
    )
    assert echo.returncode == 0, echo.stderr
    files = [str(f) for f in phantom_files[:3]]
    store = subprocess.run(
        ["storescu", "-aet", SENDER, "-aec", "TEA_MED", "127.0.0.1", port, *files],
        capture_output=True,
        text=True,
    )
    assert store.returncode == 0, store.stderr
    spool = node.config.spool
    wait_for(lambda: len(list((spool / "done").glob("*.dcm"))) == 3)
    stranger = subprocess.run(
        ["storescu", "-aet", "STRANGER", "-aec", "TEA_MED", "127.0.0.1", port, files[0]],
        capture_output=True,
        text=True,
    )
    assert stranger.returncode != 0 and "Rejected" in stranger.stdout + stranger.stderr
