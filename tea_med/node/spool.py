"""The node's durable spool: every received instance is on disk before it is acknowledged.

Layout under the spool folder::

    incoming/<SOPInstanceUID>.dcm    received, not yet classified
    done/<SOPInstanceUID>.dcm        classified; its results are in results/
    quarantine/<SOPInstanceUID>.dcm  could not be classified; <SOPInstanceUID>.reason.txt says why
    results/<SOPInstanceUID>/        predictions.json, <uid>_sr.dcm, <uid>_sc.dcm, COMPLETE
    outbox/<SOPInstanceUID>_sr.dcm   results waiting to be sent to the destination
    .tmp/                            files being written (never read)

A file is written to ``.tmp/``, flushed and fsynced, renamed into place (atomic on one file
system) and the folder is fsynced, so after a power cut a file either is complete where it
belongs or is not there. A folder of results counts only once its ``COMPLETE`` marker exists;
each instance therefore has exactly one result however often the node restarts.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

FOLDERS = ("incoming", "done", "quarantine", "results", "outbox", ".tmp")
COMPLETE = "COMPLETE"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def safe_uid(uid: str) -> str:
    """``uid`` if it is a well-formed DICOM UID (digits and dots, at most 64), else ``ValueError``:
    UIDs become file names, so nothing else may."""
    uid = str(uid).strip().rstrip("\0")
    if not uid or len(uid) > 64 or not _UID.match(uid):
        raise ValueError(f"not a valid SOP Instance UID: {uid[:80]!r}")
    return uid


class Spool:
    """The spool folder (created with its sub-folders)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / ".tmp"
        for leftover in self.tmp.iterdir():  # half-written files of an interrupted run
            leftover.unlink(missing_ok=True) if leftover.is_file() else shutil.rmtree(
                leftover, ignore_errors=True
            )

    def folder(self, name: str) -> Path:
        return self.root / name

    def write_durably(self, target: Path, data: bytes) -> Path:
        """Write ``data`` to ``target`` through ``.tmp/`` with fsync, atomic rename and folder fsync."""
        staged = self.tmp / f"{uuid.uuid4().hex}.part"
        with open(staged, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staged, target)
        _fsync_dir(target.parent)
        return target

    def receive(self, sop_instance_uid: str, data: bytes) -> Path:
        """Store one received instance in ``incoming/`` durably; returns its path.

        An instance already classified (in ``done/``) is not stored again: the sender is told it
        was stored, and its existing result stands.
        """
        uid = safe_uid(sop_instance_uid)
        done = self.root / "done" / f"{uid}.dcm"
        if done.exists():
            return done
        return self.write_durably(self.root / "incoming" / f"{uid}.dcm", data)

    def pending(self) -> Iterator[Path]:
        """Instances waiting in ``incoming/``, oldest first."""
        files = [f for f in (self.root / "incoming").glob("*.dcm") if f.is_file()]
        yield from sorted(files, key=lambda f: (f.stat().st_mtime_ns, f.name))

    def results_dir(self, uid: str) -> Path:
        return self.root / "results" / safe_uid(uid)

    def has_results(self, uid: str) -> bool:
        return (self.results_dir(uid) / COMPLETE).is_file()

    def finish(self, path: Path) -> Path:
        """Move a classified instance from ``incoming/`` to ``done/``."""
        target = self.root / "done" / path.name
        os.replace(path, target)
        _fsync_dir(target.parent)
        _fsync_dir(path.parent)
        return target

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move an instance that cannot be classified to ``quarantine/`` with a reason file."""
        target = self.root / "quarantine" / path.name
        self.write_durably(target.with_suffix(".reason.txt"), (reason.strip() + "\n").encode())
        os.replace(path, target)
        _fsync_dir(target.parent)
        _fsync_dir(path.parent)
        return target

    def free_mb(self) -> float:
        """Free space on the spool's file system, MiB."""
        return shutil.disk_usage(self.root).free / (1 << 20)


__all__ = ["COMPLETE", "FOLDERS", "Spool", "safe_uid"]
