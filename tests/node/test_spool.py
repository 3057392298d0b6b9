"""The spool writes whole files or nothing, and keeps what was classified out of a second run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tea_med.node.spool import Spool, safe_uid


def test_received_bytes_land_in_incoming_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.receive("1.2.3.4", b"DICM" * 100)
    assert path == tmp_path / "incoming" / "1.2.3.4.dcm"
    assert path.read_bytes() == b"DICM" * 100
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert [p.name for p in spool.pending()] == ["1.2.3.4.dcm"]


def test_an_instance_already_classified_is_not_spooled_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    done = spool.finish(spool.receive("1.2.3", b"first"))
    assert spool.receive("1.2.3", b"second") == done
    assert done.read_bytes() == b"first" and list(spool.pending()) == []


def test_quarantine_keeps_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    moved = spool.quarantine(spool.receive("9.8.7", b"x"), "bad pixels")
    assert moved.parent.name == "quarantine"
    assert (tmp_path / "quarantine" / "9.8.7.reason.txt").read_text() == "bad pixels\n"


def test_half_written_files_of_an_interrupted_run_are_discarded(tmp_path: Path) -> None:
    Spool(tmp_path)
    (tmp_path / ".tmp" / "abc.part").write_bytes(b"partial")
    Spool(tmp_path)
    assert list((tmp_path / ".tmp").iterdir()) == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "1.2.3/4", "", "1.2." + "3" * 70, "1..2", "abc"])
def test_only_well_formed_uids_become_file_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid SOP Instance UID"):
        safe_uid(bad)
