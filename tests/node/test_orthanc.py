"""Against a real PACS: Orthanc forwards new CR/DX to the node (Lua ``OnStoredInstance``), the
node sends the SR and the heatmap Secondary Capture back, and they are read from Orthanc's REST API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from node.conftest import free_port, node_settings, wait_for

from tea_med.node.config import from_mapping
from tea_med.node.scp import StorageNode

LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if (modality == 'CR' or modality == 'DX') and origin['RemoteAet'] ~= 'TEA_MED' then
    SendToModality(instanceId, 'teamed')
  end
end
"""


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[dict[str, int]]:
    binary = shutil.which("Orthanc")
    assert binary, "Orthanc (Debian package orthanc) is needed: apt-get install orthanc"
    ports = {"http": free_port(), "dicom": free_port(), "node": free_port()}
    (tmp_path / "forward.lua").write_text(LUA)
    config = {
        "Name": "tea_med-test-pacs",
        "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"),
        "HttpPort": ports["http"],
        "DicomPort": ports["dicom"],
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpBindAddress": "127.0.0.1",
        "DicomServerEnabled": True,
        "DicomModalities": {"teamed": ["TEA_MED", "127.0.0.1", ports["node"]]},
        "LuaScripts": [str(tmp_path / "forward.lua")],
        "Plugins": [],
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, str(tmp_path / "orthanc.json")], stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(ports["http"], "/system")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "orthanc.log").read_text()) from None
                time.sleep(0.3)
        yield ports
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.integration
def test_orthanc_forwards_to_the_node_and_shows_its_results(
    orthanc: dict[str, int], node_bundle: Path, phantom_files: list[Path], tmp_path: Path
) -> None:
    settings = node_settings(
        node_bundle,
        tmp_path / "spool",
        port=orthanc["node"],
        allowed_senders=[{"ae_title": "ORTHANC", "ip": "127.0.0.1"}],
        destination={"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc["dicom"], "backoff_s": 0.5},
    )
    node = StorageNode(from_mapping(settings))
    node.start()
    try:
        sources = phantom_files[:2]
        # dcmtk as the modality: it sends to Orthanc, which forwards to the node
        store = subprocess.run(
            [
                "storescu",
                "-aet",
                "MODALITY",
                "-aec",
                "ORTHANC",
                "127.0.0.1",
                str(orthanc["dicom"]),
                *map(str, sources),
            ],
            capture_output=True,
            text=True,
        )
        assert store.returncode == 0, store.stderr
        wait_for(lambda: len(_get(orthanc["http"], "/instances")) == 6, timeout=180)
    finally:
        node.stop()
    found: dict[str, list[str]] = {}
    for instance in _get(orthanc["http"], "/instances"):
        tags = _get(orthanc["http"], f"/instances/{instance}/simplified-tags")
        found.setdefault(tags["SOPClassUID"], []).append(tags["StudyInstanceUID"])
    studies = sorted(pydicom.dcmread(f).StudyInstanceUID for f in sources)
    assert sorted(found["1.2.840.10008.5.1.4.1.1.88.34"]) == studies  # one SR per image, in its study
    assert sorted(found["1.2.840.10008.5.1.4.1.1.7"]) == studies  # one heatmap SC per image
