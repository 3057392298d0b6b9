"""``tea-med serve``: a DICOM Storage SCP beside PACS that classifies what it receives.

One process: pynetdicom's threaded association server (one thread per association), the
:class:`~tea_med.node.worker.Worker` thread and, with a destination, the
:class:`~tea_med.node.forward.Forwarder` thread.

- Presentation contexts: Verification, CR, DX for presentation, DX for processing (every
  transfer syntax pydicom can decode); any other SOP class is refused at negotiation.
- Access: the calling AE title (and, when given, the source IP) must be one of
  ``allowed_senders``; with ``require_called_aet`` the called AE title must be the node's.
  Anything else gets an A-ASSOCIATE-RJ (permanent, "calling AE title not recognised") and a
  log line. Free disk below ``min_free_disk_mb`` gets a transient rejection ("local limit
  exceeded") instead of accepting what the node could not keep.
- Durability: a C-STORE is answered 0x0000 only after the instance is in the spool on disk
  (:meth:`~tea_med.node.spool.Spool.receive`); a failed write answers 0xA700 (out of resources).
- Logs: one line per association and per instance with the SOP Instance UID, the status and
  the time taken; never a patient's name, ID or birth date (the node never decodes them).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from tea_med.node.config import NodeConfig
from tea_med.node.forward import VERIFICATION, Forwarder
from tea_med.node.spool import Spool
from tea_med.node.worker import Worker

logger = logging.getLogger("tea_med.node")

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
#: A-ASSOCIATE-RJ (result, source, diagnostic) of a sender that is not allowed
REJECT_SENDER = (0x01, 0x01, 0x03)
#: ... and of a node short of disk: transient, "local limit exceeded"
REJECT_DISK = (0x02, 0x03, 0x02)
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_INVALID_UID = 0xA900  # "dataset does not match SOP class": used for an unusable SOP Instance UID


def _tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls.certificate), str(config.tls.private_key))
    if config.tls.ca_certificates is not None:
        context.load_verify_locations(str(config.tls.ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StorageNode:
    """The node (see the module docs). ``start()`` listens and returns; ``stop()`` ends it all."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool)
        self.worker = Worker(
            self.spool, config.bundle, config.backend, forward=config.destination is not None
        )
        self.forwarder = (
            Forwarder(self.spool, config.destination, config.ae_title)
            if config.destination is not None
            else None
        )
        self.server: Any = None
        self.stored = 0
        self.rejected = 0
        self._lock = threading.Lock()
        #: per running association: (start time, instances stored)
        self._associations: dict[int, list[float]] = {}

    # ---- association events ----------------------------------------------------------------
    def _allowed(self, calling: str, ip: str) -> bool:
        return any(
            s.ae_title == calling and (s.ip is None or s.ip == ip) for s in self.config.allowed_senders
        )

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        called = str(assoc.requestor.primitive.called_ae_title).strip()
        ip = str(assoc.requestor.address)
        reason = None
        if not self._allowed(calling, ip):
            reason, code = f"sender {calling!r} from {ip} is not in allowed_senders", REJECT_SENDER
        elif self.spool.free_mb() < self.config.min_free_disk_mb:
            free = self.spool.free_mb()
            reason = f"free disk {free:.0f} MiB below the reserve of {self.config.min_free_disk_mb:.0f} MiB"
            code = REJECT_DISK
        if reason is None:
            with self._lock:
                self._associations[id(assoc)] = [time.perf_counter(), 0]
            logger.info("association requested by %s from %s to %s", calling, ip, called)
            return
        with self._lock:
            self.rejected += 1
        logger.warning("association from %s (%s) to %s rejected: %s", calling, ip, called, reason)
        assoc.acse.send_reject(*code)
        assoc.is_rejected = True
        assoc.kill()

    def _on_rejected(self, event: Any) -> None:  # pynetdicom's own checks (called AE title, limits)
        with self._lock:
            self.rejected += 1
        primitive = event.assoc.requestor.primitive
        logger.warning(
            "association from %s (%s) to %s rejected by negotiation",
            str(primitive.calling_ae_title).strip(),
            event.assoc.requestor.address,
            str(primitive.called_ae_title).strip(),
        )

    def _ended(self, event: Any, how: str) -> None:
        with self._lock:
            started, count = self._associations.pop(id(event.assoc), [time.perf_counter(), 0])
        level = logging.INFO if how == "released" else logging.WARNING
        calling = str(event.assoc.requestor.ae_title).strip()
        seconds = time.perf_counter() - started
        logger.log(
            level, "association with %s %s after %.2f s, %d instance(s) stored", calling, how, seconds, count
        )

    def _on_released(self, event: Any) -> None:
        self._ended(event, "released")

    def _on_aborted(self, event: Any) -> None:
        self._ended(event, "aborted")

    def _on_store(self, event: Any) -> int:
        started = time.perf_counter()
        uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            data = event.encoded_dataset()  # the instance as a DICOM file, without decoding it
            self.spool.receive(uid, data)
        except ValueError as err:
            logger.warning("instance %r refused (0x%04X): %s", uid[:64], STATUS_INVALID_UID, err)
            return STATUS_INVALID_UID
        except OSError as err:
            logger.error("instance %s not stored (0x%04X): %s", uid, STATUS_OUT_OF_RESOURCES, err)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self.stored += 1
            running = self._associations.get(id(event.assoc))
            if running is not None:
                running[1] += 1
        self.worker.wake.set()
        logger.info("instance %s stored (0x0000) in %.3f s", uid, time.perf_counter() - started)
        return 0x0000

    # ---- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (and forwarder) and listen; returns once the port is open."""
        ae = AE(ae_title=self.config.ae_title)
        ae.add_supported_context(VERIFICATION)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.require_called_aet = self.config.require_called_aet
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = 0  # no limit on what the peer sends per PDU
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self.worker.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self.server = ae.start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=_tls_context(self.config),
        )
        logger.info(
            "tea-med serve: %s listening on %s:%d (%d sender(s) allowed, backend %s)",
            self.config.ae_title,
            self.config.host,
            self.config.port,
            len(self.config.allowed_senders),
            self.config.backend,
        )

    def stop(self) -> None:
        """Stop accepting, let running associations end, stop the worker after its current
        instance (the rest stays in the spool) and the forwarder."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.worker.stop()
        self.worker.join(timeout=120)
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder.join(timeout=60)
        logger.info("tea-med serve: stopped (%d stored, %d rejected)", self.stored, self.rejected)


__all__ = ["STORAGE_CLASSES", "StorageNode"]
