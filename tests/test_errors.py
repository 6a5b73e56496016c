"""The error tree: every low-level failure maps to the most specific LLMError; errors carry
the request and never a secret; they survive pickling."""

from __future__ import annotations

import pickle
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from llmtap import (
    LLMConfig,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMUsageError,
)
from llmtap._errors import MAX_SERVER_MESSAGE
from llmtap._http.status import transport_error

CONFIG = LLMConfig(endpoint="http://127.0.0.1:9", connect_timeout=3.0)
URL_ = "http://127.0.0.1:9/v1/chat/completions"


def _key() -> Any:
    from aiohttp.client_reqrep import ConnectionKey

    return ConnectionKey("127.0.0.1", 9, False, True, None, None, None)


def _request_info() -> aiohttp.RequestInfo:
    headers = CIMultiDictProxy(CIMultiDict[str]())
    return aiohttp.RequestInfo(URL(URL_), "POST", headers, URL(URL_))


#: Each low-level failure (made by a function, since aiohttp's newer classes are missing
#: from the oldest aiohttp llmtap supports), the error it must become, and whether it
#: happened while reading the body.
_CASES: list[tuple[Callable[[], BaseException], type[LLMError], bool]] = [
    (
        lambda: aiohttp.ClientConnectorError(_key(), OSError(111, "Connection refused")),
        LLMConnectionError,
        False,
    ),
    (
        lambda: aiohttp.ClientConnectorDNSError(_key(), OSError(-2, "Name not known")),
        LLMConnectionError,
        False,
    ),
    (
        lambda: aiohttp.ClientConnectorSSLError(_key(), ssl.SSLError("bad")),
        LLMConnectionError,
        False,
    ),
    (
        lambda: aiohttp.ClientConnectorCertificateError(_key(), ssl.CertificateError("x")),
        LLMConnectionError,
        False,
    ),
    (lambda: aiohttp.ClientSSLError(_key(), OSError("tls")), LLMConnectionError, False),
    (lambda: aiohttp.ConnectionTimeoutError("connect"), LLMTimeoutError, False),
    (lambda: aiohttp.SocketTimeoutError("read"), LLMTimeoutError, True),
    (lambda: aiohttp.UploadAbortedError("aborted"), LLMConnectionError, False),
    (lambda: aiohttp.ServerTimeoutError("timeout"), LLMTimeoutError, False),
    (lambda: aiohttp.ServerDisconnectedError(), LLMConnectionError, False),
    (lambda: aiohttp.ServerDisconnectedError(), LLMConnectionError, True),
    (lambda: aiohttp.ClientOSError(104, "Connection reset by peer"), LLMConnectionError, True),
    (lambda: aiohttp.ClientConnectionResetError("reset"), LLMConnectionError, True),
    (
        lambda: aiohttp.ClientPayloadError("Response payload is not completed"),
        LLMConnectionError,
        True,
    ),
    (lambda: aiohttp.ServerFingerprintMismatch(b"a", b"b", "h", 1), LLMConnectionError, False),
    (
        lambda: aiohttp.ClientResponseError(_request_info(), (), status=500),
        LLMConnectionError,
        True,
    ),
    (lambda: aiohttp.InvalidURL("nope"), LLMConnectionError, False),
    (lambda: aiohttp.ClientError("anything"), LLMConnectionError, True),
    (lambda: ConnectionResetError(104, "reset"), LLMConnectionError, True),
    (lambda: OSError(5, "I/O error"), LLMConnectionError, False),
]


def _low_level() -> list[tuple[BaseException, type[LLMError], bool]]:
    """The cases this aiohttp has the classes for."""
    found = []
    for make, expected, reading in _CASES:
        try:
            found.append((make(), expected, reading))
        except AttributeError:  # a class newer than the installed aiohttp
            continue
    return found


LOW_LEVEL = _low_level()


@pytest.mark.parametrize(("exc", "expected", "reading"), LOW_LEVEL)
def test_every_low_level_error_is_mapped(
    exc: BaseException, expected: type[LLMError], reading: bool
) -> None:
    """Each aiohttp and OS failure becomes exactly the documented LLMError subclass."""
    error = transport_error(exc, CONFIG, "POST", URL_, reading=reading)
    assert type(error) is expected
    assert (error.method, error.url) == ("POST", URL_)
    if isinstance(error, LLMTimeoutError):
        expected_deadline = "idle" if isinstance(exc, aiohttp.SocketTimeoutError) else "connect"
        timeout = CONFIG.idle_timeout if expected_deadline == "idle" else 3.0
        assert (error.deadline, error.timeout) == (expected_deadline, timeout)


def test_every_aiohttp_error_class_is_covered() -> None:
    """No aiohttp client exception class is left out of the mapping table above."""
    covered = {type(exc) for exc, _, _ in LOW_LEVEL}
    client_errors = {
        cls
        for cls in vars(aiohttp).values()
        if isinstance(cls, type) and issubclass(cls, aiohttp.ClientError)
    }
    not_ours = {  # redirects are never followed; websockets and proxies are not used
        getattr(aiohttp, name, None)
        for name in (
            "TooManyRedirects",
            "RedirectClientError",
            "InvalidUrlRedirectClientError",
            "NonHttpUrlRedirectClientError",
            "InvalidUrlClientError",
            "NonHttpUrlClientError",
            "WSServerHandshakeError",
            "ClientHttpProxyError",
            "ClientProxyConnectionError",
            "ContentTypeError",
            "ServerConnectionError",
            "ClientConnectionError",
            "WSMessageTypeError",
        )
    }
    assert client_errors - not_ours - covered == set()


def test_the_tree_is_as_documented() -> None:
    """The hierarchy matches the errors module's docstring."""
    assert issubclass(LLMConnectionError, LLMError)
    assert issubclass(LLMTimeoutError, LLMConnectionError)
    assert issubclass(LLMResponseError, LLMError)
    assert issubclass(LLMRateLimitError, LLMResponseError)
    assert issubclass(LLMStreamError, LLMError)
    assert issubclass(LLMStreamInterrupted, LLMStreamError)
    assert issubclass(LLMUsageError, RuntimeError)
    assert not issubclass(LLMUsageError, LLMError)


def test_error_text_names_the_request_and_request_id() -> None:
    """str() carries method, URL and the server's request id."""
    error = LLMResponseError("boom", 500, method="POST", url=URL_, request_id="req-1")
    assert str(error) == f"boom [POST {URL_}] (request id req-1)"
    assert repr(error) == "LLMResponseError('boom', status_code=500)"


def test_userinfo_password_is_redacted_from_urls() -> None:
    """A password in the URL never shows in the error."""
    error = LLMConnectionError("x", method="GET", url="http://user:hunter2@host:8/v1/models")
    assert error.url == "http://user:***@host:8/v1/models"
    assert "hunter2" not in str(error)


def test_server_message_is_bounded() -> None:
    """A huge server message is cut to 2 KiB."""
    error = LLMResponseError("x", 500, server_message="y" * 100_000)
    assert error.server_message is not None
    assert len(error.server_message) == MAX_SERVER_MESSAGE + 1
    assert error.server_message.endswith("…")


async def test_a_huge_error_body_gives_an_error_under_4_kib() -> None:
    """A 400 whose JSON error body is 100 KB (and a request id of 4 KB): the error's str()
    and repr() stay under 4 KiB, of UTF-8 bytes."""
    from llmtap import LLMClient, Message
    from llmtap.testing import Reply, TestServer

    message = "é" * 50_000  # two bytes each: 100 KB
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(status=400, error_message=message, headers={"x-request-id": "r" * 4000})
        )
        async with LLMClient(endpoint=server.url, model="m") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.chat([Message.user("hi")])
    error = info.value
    assert len(str(error).encode()) < 4096
    assert len(repr(error).encode()) < 4096
    assert error.message.startswith("The server answered 400: ")
    assert "more characters]" in error.message


@pytest.mark.parametrize(
    "error",
    [
        LLMError(
            "m" * 100_000, method="POST", url="http://h/" + "u" * 100_000, request_id="r" * 9999
        ),
        LLMStreamInterrupted.after(LLMConnectionError("c" * 100_000), "t" * 100_000, 5),
        LLMTimeoutError("🦙" * 50_000, deadline="idle", timeout=1.0),
        LLMRateLimitError("x" * 100_000, 429, server_message="y" * 100_000),
    ],
    ids=["base", "interrupted", "four-byte characters", "rate limit"],
)
def test_every_error_stays_under_4_kib(error: LLMError) -> None:
    """Whatever goes into an error, its str() and repr() stay under 4 KiB."""
    assert len(str(error).encode()) < 4096
    assert len(repr(error).encode()) < 4096


def test_errors_survive_pickling() -> None:
    """Errors cross process boundaries with their fields (keyword-only constructors)."""
    error = LLMStreamInterrupted(
        "cut", partial_text="abc", chunks_received=3, method="POST", url=URL_
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is LLMStreamInterrupted
    assert (copy.partial_text, copy.chunks_received, copy.url) == ("abc", 3, URL_)
    timeout = pickle.loads(pickle.dumps(LLMTimeoutError("t", deadline="idle", timeout=2.0)))
    assert (timeout.deadline, timeout.timeout) == ("idle", 2.0)
