"""Sending results from the spool's ``outbox/`` to the destination AE (the PACS), C-STORE by C-STORE.

A result file leaves the outbox only after the destination answered 0x0000 for it. A failed
send is retried with exponential backoff (``backoff_s``, doubling, at most a minute); after
``retries`` failed attempts in a row the file stays in the outbox, is reported in the log and
is tried again later, so results reach the PACS once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pydicom
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE

from tea_med.node.config import Destination
from tea_med.node.spool import Spool

#: the Verification SOP Class (C-ECHO)
VERIFICATION = "1.2.840.10008.1.1"

logger = logging.getLogger("tea_med.node")
MAX_BACKOFF_S = 60.0


def echo(destination: Destination, calling_ae_title: str, timeout: float = 10.0) -> int | None:
    """C-ECHO the destination; returns its status (0 = success) or ``None`` when unreachable."""
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else None
    finally:
        assoc.release()


def send_files(destination: Destination, calling_ae_title: str, files: list[Path]) -> dict[Path, int | None]:
    """C-STORE ``files`` over one association; returns each file's status (``None``: not sent)."""
    ae = AE(ae_title=calling_ae_title)
    for uid in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage):
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30.0
    result: dict[Path, int | None] = dict.fromkeys(files)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return result
    try:
        for f in files:
            status = assoc.send_c_store(pydicom.dcmread(f))
            result[f] = int(status.Status) if status else None
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return result


class Forwarder(threading.Thread):
    """Empties the outbox into the destination (see the module docs)."""

    def __init__(self, spool: Spool, destination: Destination, calling_ae_title: str) -> None:
        super().__init__(name="tea_med-forwarder", daemon=True)
        self.spool = spool
        self.destination = destination
        self.calling = calling_ae_title
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self.sent = 0
        self.failures: dict[str, int] = {}

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def pending(self) -> list[Path]:
        return sorted(self.spool.folder("outbox").glob("*.dcm"))

    def run(self) -> None:
        delay = self.destination.backoff_s
        while not self._stopping.is_set():
            files = self.pending()
            if not files:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            started = time.perf_counter()
            statuses = send_files(self.destination, self.calling, files)
            failed = 0
            for f, status in statuses.items():
                if status == 0x0000:
                    f.unlink(missing_ok=True)
                    self.sent += 1
                    self.failures.pop(f.name, None)
                    logger.info("result %s sent to %s (status 0x0000)", f.name, self.destination.ae_title)
                else:
                    failed += 1
                    n = self.failures[f.name] = self.failures.get(f.name, 0) + 1
                    shown = "not sent" if status is None else f"status 0x{status:04X}"
                    if n == self.destination.retries:
                        logger.error(
                            "result %s still in the outbox after %d attempts (%s); retrying later",
                            f.name,
                            n,
                            shown,
                        )
            if failed:
                self._stopping.wait(delay)
                delay = min(MAX_BACKOFF_S, max(delay, 0.1) * 2)
            else:
                delay = self.destination.backoff_s
                logger.debug("outbox emptied in %.2f s", time.perf_counter() - started)


__all__ = ["Forwarder", "echo", "send_files"]
