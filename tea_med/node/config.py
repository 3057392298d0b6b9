"""The DICOM node's settings (``tea-med serve --config node.toml``), checked before anything starts.

Example ``node.toml``::

    ae_title = "TEA_MED"              # the node's own AE title
    host = "127.0.0.1"                # interface to listen on
    port = 11112
    bundle = "/opt/tea_med/tea_student"
    spool = "/var/lib/tea_med/spool"  # incoming/, done/, quarantine/, results/, outbox/
    backend = "onnx"                  # eager | torchscript | onnx
    require_called_aet = true         # refuse associations addressed to another AE title
    min_free_disk_mb = 5120           # below this free space new associations are refused (transient)
    max_associations = 25

    [[allowed_senders]]               # only these may send; ip is optional
    ae_title = "PACS"
    ip = "10.0.0.5"

    [destination]                     # optional: where results are sent (C-STORE)
    ae_title = "PACS"
    host = "10.0.0.5"
    port = 104
    retries = 5                       # attempts per result file
    backoff_s = 2.0                   # first wait; doubles after each failure

    [tls]                             # optional
    certificate = "/etc/tea_med/node.crt"
    private_key = "/etc/tea_med/node.key"
    ca_certificates = "/etc/tea_med/ca.crt"   # senders must present a certificate signed by it

Every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

BACKENDS = ("eager", "torchscript", "onnx")


class NodeConfigError(ValueError):
    """A node setting that cannot be used; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Sender:
    """A sender allowed to store: its calling AE title and, optionally, its IP address."""

    ae_title: str
    ip: str | None = None


@dataclass(frozen=True)
class Destination:
    """The AE that receives the node's results (the PACS)."""

    ae_title: str
    host: str
    port: int
    retries: int = 5
    backoff_s: float = 2.0


@dataclass(frozen=True)
class TLSSettings:
    """Certificate and key of the node, and the CA that signs the senders' certificates."""

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    """See the module docs for each key."""

    bundle: Path
    spool: Path
    ae_title: str = "TEA_MED"
    host: str = "127.0.0.1"
    port: int = 11112
    backend: str = "eager"
    allowed_senders: tuple[Sender, ...] = ()
    require_called_aet: bool = True
    min_free_disk_mb: float = 5120.0
    max_associations: int = 25
    batch_size: int = 4
    destination: Destination | None = None
    tls: TLSSettings | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_overrides(self, **values: Any) -> NodeConfig:
        """A copy with the given keys replaced (command-line flags override the file), checked."""
        given = {k: v for k, v in values.items() if v is not None}
        return check(replace(self, **given)) if given else self


_KEYS = {f.name for f in fields(NodeConfig)} - {"extra"}
_SENDER_KEYS = {"ae_title", "ip"}
_DEST_KEYS = {f.name for f in fields(Destination)}
_TLS_KEYS = {f.name for f in fields(TLSSettings)}


def _ae_title(value: Any, key: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 16 or "\\" in value:
        raise NodeConfigError(f"{key} = {value!r}: an AE title is 1 to 16 characters without a backslash")
    if not value.isascii() or any(c < " " for c in value):
        raise NodeConfigError(f"{key} = {value!r}: an AE title uses printable ASCII only")
    return value.strip()


def _port(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise NodeConfigError(f"{key} = {value!r}: a TCP port is a whole number in 1..65535")
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise NodeConfigError(f"unknown key {where}{extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def check(config: NodeConfig) -> NodeConfig:
    """Validate every field; raises :class:`NodeConfigError` naming the first bad one."""
    _ae_title(config.ae_title, "ae_title")
    _port(config.port, "port")
    if config.backend not in BACKENDS:
        raise NodeConfigError(f"backend = {config.backend!r}; allowed: {', '.join(BACKENDS)}")
    try:
        ipaddress.ip_address(config.host)
    except ValueError:
        if config.host not in ("localhost", ""):
            raise NodeConfigError(
                f"host = {config.host!r}: an IP address to listen on (e.g. 127.0.0.1)"
            ) from None
    if not (config.bundle / "configs").is_dir():
        raise NodeConfigError(f"bundle = {str(config.bundle)!r}: not a bundle folder (no configs/ inside)")
    if not isinstance(config.min_free_disk_mb, int | float) or config.min_free_disk_mb < 0:
        raise NodeConfigError(f"min_free_disk_mb = {config.min_free_disk_mb!r}: a number of MiB >= 0")
    for key in ("max_associations", "batch_size"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise NodeConfigError(f"{key} = {value!r}: a whole number >= 1")
    if not isinstance(config.require_called_aet, bool):
        raise NodeConfigError(f"require_called_aet = {config.require_called_aet!r}: true or false")
    if not config.allowed_senders:
        raise NodeConfigError(
            "allowed_senders is empty: the node accepts known senders only; add an [[allowed_senders]] "
            "table with ae_title (and optionally ip)"
        )
    for i, sender in enumerate(config.allowed_senders):
        _ae_title(sender.ae_title, f"allowed_senders[{i}].ae_title")
        if sender.ip is not None:
            try:
                ipaddress.ip_address(sender.ip)
            except ValueError:
                raise NodeConfigError(f"allowed_senders[{i}].ip = {sender.ip!r}: an IP address") from None
    if config.destination is not None:
        d = config.destination
        _ae_title(d.ae_title, "destination.ae_title")
        _port(d.port, "destination.port")
        if not isinstance(d.retries, int) or d.retries < 1:
            raise NodeConfigError(f"destination.retries = {d.retries!r}: a whole number >= 1")
        if not isinstance(d.backoff_s, int | float) or d.backoff_s < 0:
            raise NodeConfigError(f"destination.backoff_s = {d.backoff_s!r}: seconds >= 0")
    if config.tls is not None:
        for key in ("certificate", "private_key", "ca_certificates"):
            path = getattr(config.tls, key)
            if path is not None and not Path(path).is_file():
                raise NodeConfigError(f"tls.{key} = {str(path)!r}: the file does not exist")
    return config


def from_mapping(table: Mapping[str, Any], base_dir: Path = Path()) -> NodeConfig:
    """Build and check a :class:`NodeConfig` from a parsed TOML table (paths relative to ``base_dir``)."""
    _unknown(table, _KEYS, "")
    for key in ("bundle", "spool"):
        if key not in table:
            raise NodeConfigError(f"{key} is required (a path)")
    values: dict[str, Any] = {
        k: v for k, v in table.items() if k not in ("allowed_senders", "destination", "tls")
    }
    for key in ("bundle", "spool"):
        values[key] = base_dir / os.fspath(values[key])
    senders = []
    raw_senders = table.get("allowed_senders", [])
    if not isinstance(raw_senders, list):
        raise NodeConfigError("allowed_senders must be an array of tables ([[allowed_senders]])")
    for i, s in enumerate(raw_senders):
        if not isinstance(s, Mapping) or "ae_title" not in s:
            raise NodeConfigError(f"allowed_senders[{i}] needs ae_title (and optionally ip)")
        _unknown(s, _SENDER_KEYS, f"allowed_senders[{i}].")
        senders.append(Sender(str(s["ae_title"]), None if s.get("ip") is None else str(s["ip"])))
    values["allowed_senders"] = tuple(senders)
    if "destination" in table:
        d = table["destination"]
        _unknown(d, _DEST_KEYS, "destination.")
        missing = [k for k in ("ae_title", "host", "port") if k not in d]
        if missing:
            raise NodeConfigError(f"destination needs {', '.join(missing)}")
        values["destination"] = Destination(**d)
    if "tls" in table:
        t = table["tls"]
        _unknown(t, _TLS_KEYS, "tls.")
        if "certificate" not in t or "private_key" not in t:
            raise NodeConfigError("tls needs certificate and private_key")
        values["tls"] = TLSSettings(
            base_dir / t["certificate"],
            base_dir / t["private_key"],
            None if t.get("ca_certificates") is None else base_dir / t["ca_certificates"],
        )
    try:
        config = NodeConfig(**values)
    except TypeError as err:
        raise NodeConfigError(str(err)) from err
    return check(config)


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read ``node.toml``; relative paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise NodeConfigError(f"config {path} does not exist")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise NodeConfigError(f"{path} is not valid TOML: {err}") from err
    return from_mapping(table, path.parent)


__all__ = [
    "BACKENDS",
    "Destination",
    "NodeConfig",
    "NodeConfigError",
    "Sender",
    "TLSSettings",
    "check",
    "from_mapping",
    "load_config",
]
