"""Connecting to the checked address keeps TLS honest: the certificate is verified and SNI names
the host from the URL, not the IP address we connected to."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from tests.sending import post
from workers.delivery.http import OutboundClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def tls_server(tmp_path):
    """A TLS listener on 127.0.0.1 with a self-signed certificate for 'localhost'."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: seen_names.append(name)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
        except (OSError, ssl.SSLError):
            pass  # the client refuses our certificate, as it should

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen_names
    listener.close()
    thread.join(5)


def test_the_certificate_is_verified_and_sni_names_the_url_host(settings, tls_server):
    port, seen_names = tls_server
    result = post(OutboundClient(settings), f"https://localhost:{port}/hook", b"{}", {})
    assert result.status is None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert seen_names == ["localhost"]
