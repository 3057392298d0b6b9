"""``node.toml``: every bad setting is named with its value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from node.conftest import free_port, node_settings
from pynetdicom import AE

from tea_med.cli import main
from tea_med.node.config import NodeConfigError, from_mapping, load_config


def test_a_full_config_file_is_read_with_paths_relative_to_it(node_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        f"""
ae_title = "TEA_NODE"
port = 11113
bundle = "{node_bundle}"
spool = "spool"
backend = "onnx"
min_free_disk_mb = 100

[[allowed_senders]]
ae_title = "PACS"
ip = "10.0.0.5"

[[allowed_senders]]
ae_title = "CR1"

[destination]
ae_title = "PACS"
host = "10.0.0.5"
port = 104
"""
    )
    config = load_config(tmp_path / "node.toml")
    assert (config.ae_title, config.port, config.backend) == ("TEA_NODE", 11113, "onnx")
    assert config.spool == tmp_path / "spool"
    assert [(s.ae_title, s.ip) for s in config.allowed_senders] == [("PACS", "10.0.0.5"), ("CR1", None)]
    assert config.destination is not None and config.destination.port == 104
    assert config.destination.retries == 5  # the default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backend": "gpu"}, "backend = 'gpu'; allowed: eager, torchscript, onnx"),
        ({"port": 70000}, "port = 70000: a TCP port is a whole number in 1..65535"),
        (
            {"ae_title": "A_TITLE_LONGER_THAN_16"},
            "ae_title = 'A_TITLE_LONGER_THAN_16': an AE title is 1 to 16",
        ),
        ({"colour": "blue"}, "unknown key 'colour'; allowed: "),
        ({"allowed_senders": []}, "allowed_senders is empty"),
        ({"allowed_senders": [{"ae_title": "X", "ip": "not-an-ip"}]}, "allowed_senders[0].ip = 'not-an-ip'"),
        ({"destination": {"ae_title": "PACS", "host": "127.0.0.1"}}, "destination needs port"),
        ({"max_associations": 0}, "max_associations = 0: a whole number >= 1"),
        ({"tls": {"certificate": "none.crt", "private_key": "none.key"}}, "tls.certificate = "),
    ],
)
def test_bad_settings_name_the_key_the_value_and_what_is_allowed(
    node_bundle: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    table = node_settings(node_bundle, tmp_path / "spool") | change
    with pytest.raises(NodeConfigError) as info:
        from_mapping(table, tmp_path)
    assert message in str(info.value)


def test_serve_check_validates_and_echoes_the_destination(
    node_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    toml = tmp_path / "node.toml"
    body = f'bundle = "{node_bundle}"\nspool = "spool"\n[[allowed_senders]]\nae_title = "M"\n'
    toml.write_text(body + f'[destination]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {port}\n')
    assert main(["serve", "--config", str(toml), "--check"]) == 1  # nothing listens there
    assert "C-ECHO failed" in capsys.readouterr().err
    pacs = AE(ae_title="PACS")
    pacs.add_supported_context("1.2.840.10008.1.1")
    server = pacs.start_server(("127.0.0.1", port), block=False)
    try:
        assert main(["serve", "--config", str(toml), "--check"]) == 0
        assert "answers C-ECHO" in capsys.readouterr().out
    finally:
        server.shutdown()
    with pytest.raises(SystemExit) as refused:  # argparse refuses an unknown backend
        main(["serve", "--config", str(toml), "--check", "--backend", "cuda"])
    assert refused.value.code == 2
    assert main(["serve", "--config", str(toml), "--check", "--port", "0"]) == 2
    assert "port = 0" in capsys.readouterr().err
