"""TLS against a real HTTPS server on loopback: verification on by default, a private CA
bundle, a client certificate, an untrusted certificate, and ``verify=False``.

Certificates are made at test time with the ``openssl`` command (a private CA, a server
certificate for 127.0.0.1 signed by it, a client certificate, and a self-signed server
certificate nobody trusts). The server is ``aiohttp.web`` with an ``ssl.SSLContext``: it
lists one model and streams one fixed answer.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from llmtap import LLMClient, LLMConfig, LLMConnectionError, Message

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command makes the test certificates"
)

HELLO = [Message.user("hello")]
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    untrusted: tuple[Path, Path]  # self-signed, for 127.0.0.1


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _leaf(folder: Path, name: str, usage: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1 signed by the CA, for ``usage``."""
    ext = folder / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    _openssl("req", *EC, "-keyout", key, "-out", csr, "-subj", f"/CN={name}", cwd=folder)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext, cwd=folder,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        "req", "-x509", *EC, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=llmtap test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder,
    )  # fmt: skip
    rogue, rogue_key = folder / "rogue.pem", folder / "rogue.key"
    _openssl(
        "req", "-x509", *EC, "-keyout", rogue_key, "-out", rogue, "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", cwd=folder,
    )  # fmt: skip
    return Certs(
        ca=ca,
        server=_leaf(folder, "server", "serverAuth", ca, ca_key),
        client=_leaf(folder, "client", "clientAuth", ca, ca_key),
        untrusted=(rogue, rogue_key),
    )


ANSWER = (
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {"content": "over TLS"}}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


class HTTPSServer:
    """An HTTPS server on loopback that streams ``ANSWER`` to any chat request.

    Attributes:
        peers: The subject CN of the client certificate of each chat request (``None``
            when the client sent none).
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.peers: list[str | None] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport else None
        subject = dict(item[0] for item in peer["subject"]) if peer else None
        self.peers.append(subject.get("commonName") if subject else None)
        return web.Response(body=ANSWER, content_type="text/event-stream")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def __aenter__(self) -> HTTPSServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _server_context(cert: tuple[Path, Path], client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
async def private_ca_server(certs: Certs) -> AsyncIterator[HTTPSServer]:
    """A server whose certificate the private CA signed."""
    async with HTTPSServer(_server_context(certs.server)) as server:
        yield server


@pytest.fixture
async def untrusted_server(certs: Certs) -> AsyncIterator[HTTPSServer]:
    """A server with a self-signed certificate."""
    async with HTTPSServer(_server_context(certs.untrusted)) as server:
        yield server


@pytest.fixture
async def mutual_tls_server(certs: Certs) -> AsyncIterator[HTTPSServer]:
    """A server that requires a client certificate signed by the private CA."""
    async with HTTPSServer(_server_context(certs.server, client_ca=certs.ca)) as server:
        yield server


def _client(url: str, **tls: object) -> LLMClient:
    return LLMClient(LLMConfig(endpoint=url, model="m", max_retries=0, **tls))  # type: ignore[arg-type]


def test_verification_is_on_by_default() -> None:
    """A config that says nothing about TLS verifies certificates."""
    assert LLMConfig().verify is True
    assert LLMConfig().client_cert is None


async def test_default_client_rejects_a_private_ca(private_ca_server: HTTPSServer) -> None:
    """Without the CA bundle, a certificate from a private CA fails with LLMConnectionError
    that says to pass verify=."""
    async with _client(private_ca_server.url) as client:
        with pytest.raises(LLMConnectionError) as info:
            await client.chat(HELLO)
    assert type(info.value) is LLMConnectionError
    assert "verify=" in info.value.message
    assert private_ca_server.peers == []


async def test_ca_bundle_makes_the_private_ca_trusted(
    private_ca_server: HTTPSServer, certs: Certs
) -> None:
    """verify='ca.pem' trusts the server's certificate: chat and preflight succeed."""
    async with _client(private_ca_server.url, verify=str(certs.ca)) as client:
        report = await client.preflight_check()
        result = await client.chat(HELLO)
        assert client.connections_in_use == 0
    assert result.text == "over TLS"
    assert report.models == ("m",)


async def test_untrusted_certificate_fails_even_with_a_ca_bundle(
    untrusted_server: HTTPSServer, certs: Certs
) -> None:
    """A self-signed certificate the bundle does not vouch for fails with an error that
    names verify, on chat and on preflight alike."""
    async with _client(untrusted_server.url, verify=str(certs.ca)) as client:
        with pytest.raises(LLMConnectionError) as chat_info:
            await client.chat(HELLO)
        with pytest.raises(LLMConnectionError) as preflight_info:
            await client.preflight_check()
    assert "verify=" in chat_info.value.message
    assert "verify=" in preflight_info.value.message
    assert untrusted_server.peers == []


async def test_client_certificate_is_presented(
    mutual_tls_server: HTTPSServer, certs: Certs
) -> None:
    """client_cert=(cert, key) is sent: a server that requires one answers, and sees it."""
    async with _client(
        mutual_tls_server.url,
        verify=str(certs.ca),
        client_cert=(str(certs.client[0]), str(certs.client[1])),
    ) as client:
        result = await client.chat(HELLO)
    assert result.text == "over TLS"
    assert mutual_tls_server.peers == ["client"]


async def test_missing_client_certificate_is_a_connection_error(
    mutual_tls_server: HTTPSServer, certs: Certs
) -> None:
    """Without client_cert, a server that requires one refuses: LLMConnectionError."""
    async with _client(mutual_tls_server.url, verify=str(certs.ca)) as client:
        with pytest.raises(LLMConnectionError):
            await client.chat(HELLO)
    assert mutual_tls_server.peers == []


async def test_verify_false_accepts_anything_and_warns(
    untrusted_server: HTTPSServer, caplog: pytest.LogCaptureFixture
) -> None:
    """verify=False talks to an untrusted server, and logs tls_verification_disabled."""
    caplog.set_level(logging.WARNING, logger="llmtap")
    async with _client(untrusted_server.url, verify=False) as client:
        result = await client.chat(HELLO)
    warnings = [
        record
        for record in caplog.records
        if record.name == "llmtap" and record.getMessage().startswith("tls_verification_disabled")
    ]
    assert result.text == "over TLS"
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
