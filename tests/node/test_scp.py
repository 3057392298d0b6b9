"""The node on loopback: real associations from pynetdicom senders; what is acknowledged is kept
and classified exactly once, strangers are rejected, bad instances are quarantined."""

from __future__ import annotations

import copy
import json
import logging
import threading
from pathlib import Path

import pydicom
import pytest
from node.conftest import SENDER, free_port, node_settings, send, wait_for
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage
from pynetdicom import AE, evt

from tea_med.node.config import from_mapping
from tea_med.node.scp import StorageNode


def _results(spool: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (spool / "predictions.jsonl").read_text().splitlines()]


def test_stored_instances_are_classified_once_each(node: StorageNode, phantom_files: list[Path]) -> None:
    files = phantom_files[:6]
    assert send(node.config.port, files) == [0] * 6
    spool = node.config.spool
    wait_for(lambda: len(list((spool / "done").glob("*.dcm"))) == 6)
    uids = sorted(pydicom.dcmread(f).SOPInstanceUID for f in files)
    assert sorted(r["sop_instance_uid"] for r in _results(spool)) == uids
    for uid in uids:
        folder = spool / "results" / uid
        assert (folder / "COMPLETE").is_file()
        sr = pydicom.dcmread(folder / f"{uid}_sr.dcm")
        assert (
            sr.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID
            == uid
        )
    # sending the same images again answers success and adds no second result
    assert send(node.config.port, files[:2]) == [0, 0]
    wait_for(lambda: not list((spool / "incoming").glob("*.dcm")))
    assert len(_results(spool)) == 6


def test_an_instance_is_in_the_predictions_before_it_is_in_done(
    node: StorageNode, phantom_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = node.config.spool
    lines_at_move: list[list[str]] = []
    move = node.spool.finish

    def finish(path: Path) -> Path:  # what a reader sees the moment an instance reaches done/
        lines_at_move.append([r["sop_instance_uid"] for r in _results(spool)])
        return move(path)

    monkeypatch.setattr(node.spool, "finish", finish)
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in phantom_files[:2]]
    assert send(node.config.port, phantom_files[:2]) == [0, 0]
    wait_for(lambda: len(list((spool / "done").glob("*.dcm"))) == 2)
    assert [sorted(seen) for seen in lines_at_move] in ([uids[:1], sorted(uids)], [uids[1:], sorted(uids)])
    with open(spool / "predictions.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + 2  # header and one row each


@pytest.mark.parametrize("per_sender", [5, pytest.param(25, marks=pytest.mark.slow)])
def test_four_concurrent_senders_get_one_result_per_image(
    node: StorageNode, phantom_files: list[Path], per_sender: int
) -> None:
    batches = [phantom_files[i * per_sender : (i + 1) * per_sender] for i in range(4)]
    statuses: list[list[int | None]] = [[] for _ in batches]

    def sender(i: int) -> None:
        statuses[i] = send(node.config.port, batches[i])

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == [0] * per_sender for s in statuses), statuses
    spool = node.config.spool
    total = 4 * per_sender
    wait_for(lambda: len(list((spool / "done").glob("*.dcm"))) == total, timeout=300)
    uids = [r["sop_instance_uid"] for r in _results(spool)]
    assert len(uids) == len(set(uids)) == total


def test_strangers_wrong_called_titles_and_other_ips_are_rejected(
    node_bundle: Path, tmp_path: Path, phantom_files: list[Path]
) -> None:
    settings = node_settings(
        node_bundle,
        tmp_path / "spool",
        allowed_senders=[{"ae_title": SENDER}, {"ae_title": "REMOTE", "ip": "10.1.2.3"}],
    )
    node = StorageNode(from_mapping(settings))
    node.start()
    try:
        port = node.config.port
        assert send(port, phantom_files[:1], calling="STRANGER") == [None]
        assert send(port, phantom_files[:1], called="SOMEONE_ELSE") == [None]
        assert send(port, phantom_files[:1], calling="REMOTE") == [None]  # allowed only from 10.1.2.3
        assert node.rejected == 3 and node.stored == 0
        assert send(port, phantom_files[:1]) == [0]
    finally:
        node.stop()
    assert list((tmp_path / "spool" / "done").glob("*.dcm")) or list(
        (tmp_path / "spool" / "incoming").glob("*.dcm")
    )


def test_other_sop_classes_are_refused_at_negotiation(node: StorageNode) -> None:
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", node.config.port, ae_title="TEA_MED")
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {ComputedRadiographyImageStorage}


def test_a_node_short_of_disk_refuses_new_associations_transiently(
    node_bundle: Path, tmp_path: Path, phantom_files: list[Path]
) -> None:
    node = StorageNode(from_mapping(node_settings(node_bundle, tmp_path / "spool", min_free_disk_mb=1e12)))
    node.start()
    try:
        ae = AE(ae_title=SENDER)
        ae.add_requested_context(ComputedRadiographyImageStorage)
        assoc = ae.associate("127.0.0.1", node.config.port, ae_title="TEA_MED")
        assert assoc.is_rejected
        assert node.stored == 0
    finally:
        node.stop()


def _malformed(folder: Path, source: Path) -> list[Path]:
    folder.mkdir()
    ds = pydicom.dcmread(source)
    out = []
    truncated = copy.deepcopy(ds)
    truncated.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 3]
    for name, change in (
        ("no_pixels", lambda d: delattr(d, "PixelData")),
        ("wrong_photometric", lambda d: setattr(d, "PhotometricInterpretation", "PALETTE COLOR")),
        ("huge", lambda d: (setattr(d, "Rows", 60000), setattr(d, "Columns", 60000))),
    ):
        bad = copy.deepcopy(ds)
        bad.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{len(out) + 2}"
        change(bad)
        bad.save_as(folder / f"{name}.dcm", enforce_file_format=True)
        out.append(folder / f"{name}.dcm")
    truncated.save_as(folder / "truncated.dcm", enforce_file_format=True)
    return [folder / "truncated.dcm", *out]


def test_malformed_instances_are_quarantined_with_the_reason_and_the_node_keeps_serving(
    node: StorageNode, phantom_files: list[Path], tmp_path: Path
) -> None:
    bad = _malformed(tmp_path / "bad", phantom_files[0])
    assert send(node.config.port, [*bad, phantom_files[1]]) == [0] * 5  # stored: the worker judges them
    spool = node.config.spool
    wait_for(
        lambda: (
            len(list((spool / "quarantine").glob("*.dcm"))) == 4
            and len(list((spool / "done").iterdir())) == 1
        )
    )
    reasons = {p.name: p.read_text() for p in (spool / "quarantine").glob("*.reason.txt")}
    assert len(reasons) == 4
    text = " ".join(reasons.values())
    for expected in (
        "truncated pixel data",
        "no pixel data",
        "unsupported photometric interpretation 'PALETTE COLOR'",
    ):
        assert expected in text, text
    assert [r["sop_instance_uid"] for r in _results(spool)] == [
        pydicom.dcmread(phantom_files[1]).SOPInstanceUID
    ]


def test_no_patient_identifier_reaches_the_logs_or_the_result_files(
    node: StorageNode, phantom_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = {"PatientName": "PLANTED^NAME", "PatientID": "PLANTED-ID-4711", "PatientBirthDate": "19010203"}
    files = []
    for i, f in enumerate(phantom_files[:3]):
        ds = pydicom.dcmread(f)
        for k, v in planted.items():
            setattr(ds, k, v)
        ds.save_as(tmp_path / f"phi{i}.dcm")
        files.append(tmp_path / f"phi{i}.dcm")
    corrupt = pydicom.dcmread(files[0])
    corrupt.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    corrupt.PhotometricInterpretation = "YBR_FULL"  # quarantined: its reason file is scanned too
    corrupt.save_as(tmp_path / "phi_bad.dcm")
    with caplog.at_level(logging.DEBUG):
        assert send(node.config.port, [*files, tmp_path / "phi_bad.dcm"]) == [0] * 4
        spool = node.config.spool
        wait_for(
            lambda: (
                len(list((spool / "done").glob("*.dcm"))) == 3 and list((spool / "quarantine").glob("*.dcm"))
            )
        )
    texts = [caplog.text] + [
        p.read_text(errors="replace")
        for p in spool.rglob("*")
        if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".txt")
    ]
    assert len(texts) >= 6
    for value in planted.values():
        assert not [t for t in texts if value in t], value
    assert any("stored (0x0000)" in line for line in caplog.text.splitlines())


def test_results_reach_the_destination_once_it_is_back(
    node_bundle: Path, tmp_path: Path, phantom_files: list[Path]
) -> None:
    port = free_port()
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPClassUID))
        return 0x0000

    dest = {"ae_title": "PACS", "host": "127.0.0.1", "port": port, "retries": 2, "backoff_s": 0.2}
    node = StorageNode(from_mapping(node_settings(node_bundle, tmp_path / "spool", destination=dest)))
    node.start()
    try:
        assert send(node.config.port, phantom_files[:2]) == [0, 0]
        outbox = tmp_path / "spool" / "outbox"
        wait_for(lambda: len(list(outbox.glob("*.dcm"))) == 4)  # the PACS is down: results wait
        pacs = AE(ae_title="PACS")
        pacs.add_supported_context("1.2.840.10008.5.1.4.1.1.88.34")
        pacs.add_supported_context("1.2.840.10008.5.1.4.1.1.7")
        server = pacs.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        try:
            wait_for(lambda: not list(outbox.glob("*.dcm")), timeout=90)
        finally:
            server.shutdown()
    finally:
        node.stop()
    assert sorted(received) == sorted(["1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"] * 2)


def test_a_failed_write_answers_out_of_resources_and_nothing_is_acknowledged(
    node: StorageNode, phantom_files: list[Path]
) -> None:
    incoming = node.config.spool / "incoming"
    incoming.rmdir()
    incoming.write_text("not a folder")  # every write into incoming/ now fails
    try:
        assert send(node.config.port, phantom_files[:2]) == [0xA700, 0xA700]
        assert node.stored == 0
    finally:
        incoming.unlink()
        incoming.mkdir()
    assert send(node.config.port, phantom_files[:1]) == [0]
