"""``serve`` over TLS (SPEC §11, Transport), with certificates made in the test: HTTPS only,
client certificates required when a CA is given, the remote client verifying both ways, and
the service refusing to listen beyond loopback with nothing that authenticates clients."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from dapi_config import ConfigManager
from dapi_config.errors import ConfigError, DapiConfigError
from dapi_config.remote import RemoteConfigManager
from dapi_config.service import ServiceOptions, Transport, check_exposure, transport
from dapi_config.tls import client_context
from tests._certs import Authority, Issued, authority
from tests.api.conftest import ServeProcess, free_port
from tests.conftest import run_cli


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = authority(tmp_path, "node")
    other = authority(tmp_path, "other")
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "client": ca.issue("ops", server=False),
        "stranger": other.issue("mallory", server=False),
        "other": other,
    }


def _refused(url: str, **options: Any) -> None:
    """No HTTP reply at all: the connection fails or is closed during the handshake."""
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=10, **options)


@pytest.mark.parametrize("workers", ["1", "2"])  # each connection below: either worker
def test_https_only_with_client_certificates(
    config_file: Path, pki: dict[str, Any], serve_process: Any, workers: str
) -> None:
    ca: Authority = pki["ca"]
    server: Issued = pki["server"]
    client: Issued = pki["client"]
    trusted = client_context(ca.pem, client.cert, client.key)
    process: ServeProcess = serve_process(
        config_file,
        "--tls-cert",
        str(server.cert),
        "--tls-key",
        str(server.key),
        "--tls-client-ca",
        str(ca.pem),
        "--workers",
        workers,
        scheme="https",
        probe={"verify": trusted},
    )
    assert process.url.startswith("https://")
    reply = httpx.get(f"{process.url}/admin/v1/state", verify=trusted, timeout=10)
    assert reply.status_code == 200 and "height" in reply.json()
    assert "https://127.0.0.1" in process.log() and "client certificates required" in process.log()
    port = process.url.rsplit(":", 1)[1]
    # Plain HTTP on the same port: no reply.
    _refused(f"http://127.0.0.1:{port}/livez")
    # No client certificate, or one another CA signed: the handshake fails.
    _refused(f"{process.url}/livez", verify=client_context(ca.pem))
    stranger: Issued = pki["stranger"]
    _refused(f"{process.url}/livez", verify=client_context(ca.pem, stranger.cert, stranger.key))
    # A client that does not trust the server's CA refuses the server.
    other: Authority = pki["other"]
    _refused(f"{process.url}/livez", verify=client_context(other.pem, client.cert, client.key))
    # The remote client, with the CA and its certificate.
    with RemoteConfigManager(process.url, ca=ca.pem, cert=(client.cert, client.key)) as remote:
        remote.set_height(77)
        assert remote.get_height() == 77
    # The console's origin over HTTPS: a same-origin browser write passes the CSRF guard.
    browser = {"Origin": process.url, "Sec-Fetch-Site": "same-origin"}
    put = httpx.put(
        f"{process.url}/admin/v1/state/height",
        json={"height": 78},
        headers=browser,
        verify=trusted,
        timeout=10,
    )
    assert put.status_code == 200, put.text


@pytest.mark.parametrize("with_config", [False, True], ids=["options", "config"])
def test_tls_and_a_token_from_the_config_with_the_remote_client(
    tmp_path: Path, pki: dict[str, Any], serve_process: Any, with_config: bool
) -> None:
    ca: Authority = pki["ca"]
    server: Issued = pki["server"]
    config = tmp_path / "config.yaml"
    files = {"tls_cert": server.cert.name, "tls_key": server.key.name}
    config.write_text(
        "api:\n" + "".join(f"  {k}: {v}\n" for k, v in files.items()) if with_config else ""
    )
    with ConfigManager.open(config) as cm:
        token = cm.create_token("deploy", "write").token
    args = () if with_config else ("--tls-cert", str(server.cert), "--tls-key", str(server.key))
    process: ServeProcess = serve_process(
        config, *args, scheme="https", probe={"verify": client_context(ca.pem)}
    )
    with RemoteConfigManager(process.url, token=token, ca=ca.pem) as remote:
        remote.set_height(5)
        assert remote.get_height() == 5
    with (
        RemoteConfigManager(process.url, ca=ca.pem) as anonymous,
        pytest.raises(DapiConfigError, match="missing admin token"),
    ):
        anonymous.get_height()


def test_bad_tls_files_are_one_clear_line(config_file: Path, pki: dict[str, Any]) -> None:
    server: Issued = pki["server"]
    garbage = config_file.parent / "garbage.pem"
    garbage.write_text("not a certificate\n")
    port = str(free_port())
    cases = (
        (("--tls-cert", "missing.pem"), "TLS certificate: cannot use missing.pem"),
        (("--tls-cert", str(garbage)), "TLS certificate: cannot use"),
        (("--tls-cert", str(server.cert)), "TLS certificate: cannot use"),  # no key
        (("--tls-key", str(server.key)), "without a certificate"),
        (
            ("--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", "x"),
            "TLS client CA: cannot use x",
        ),
    )
    for args, message in cases:
        result = run_cli("--config", str(config_file), "serve", "--port", port, *args, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_beyond_loopback_without_authentication_serve_refuses_to_start(config_file: Path) -> None:
    # Refused before the socket is bound: nothing listens beyond loopback in this test.
    result = run_cli(
        "--config", str(config_file), "serve", "--host", "0.0.0.0", "--port", str(free_port())
    )
    assert result.returncode == 1
    assert "refusing to serve the admin API on 0.0.0.0 without authentication" in result.stderr
    assert "--allow-unauthenticated" in result.stderr and "Traceback" not in result.stderr


def test_what_authenticates_a_service_beyond_loopback(
    config_file: Path, pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    ca: Authority = pki["ca"]
    server: Issued = pki["server"]
    plain = Transport(None, client_certificates=False)
    with ConfigManager.open(config_file) as cm:
        assert check_exposure(cm, "127.0.0.1", plain, allow_unauthenticated=False) is False
        with pytest.raises(ConfigError, match="refusing to serve"):
            check_exposure(cm, "10.1.2.3", plain, allow_unauthenticated=False)
        assert check_exposure(cm, "10.1.2.3", plain, allow_unauthenticated=True) is False
        mutual = transport(
            cm, ServiceOptions(tls_cert=server.cert, tls_key=server.key, tls_client_ca=ca.pem)
        )
        assert mutual.client_certificates and mutual.scheme == "https"
        assert mutual.tls is not None
        assert mutual.tls.minimum_version == ssl.TLSVersion.TLSv1_2  # nothing older
        assert mutual.tls.verify_mode == ssl.CERT_REQUIRED
        assert check_exposure(cm, "10.1.2.3", mutual, allow_unauthenticated=False) is False
        cm.create_token("ops", "admin")
        # Scoped tokens authenticate it: and it refuses everyone should the last be revoked.
        caplog.clear()
        assert check_exposure(cm, "10.1.2.3", plain, allow_unauthenticated=False) is True
        assert "serves plain HTTP: tokens and node auth tokens cross the network" in caplog.text
        caplog.clear()
        assert check_exposure(cm, "10.1.2.3", mutual, allow_unauthenticated=False) is False
        assert "plain HTTP" not in caplog.text
