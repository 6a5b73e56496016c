"""Messages: what may be sent (checked before a request is built), and images on the wire."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap import LLMUsageError, Message, Router, ToolCall, _messages
from llmtap.testing import TestServer
from tests.conftest import make_client

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
GIF87 = b"GIF87a\x01\x00\x01\x00"
GIF89 = b"GIF89a\x01\x00\x01\x00"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
CALL = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})


def _url(message: Message) -> str:
    content = message.to_api_dict()["content"]
    url: str = content[-1]["image_url"]["url"]
    return url


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF87, "image/gif"),
        (GIF89, "image/gif"),
        (WEBP, "image/webp"),
    ],
)
def test_image_bytes_go_out_with_the_media_type_of_their_format(
    data: bytes, media_type: str
) -> None:
    """Raw image bytes become a data URL whose media type is the format the bytes are in."""
    url = _url(Message.user("what is this?", images=[data]))
    assert url == f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_base64_image_text_gets_the_media_type_of_what_it_encodes() -> None:
    """A base64 string (no data URL) is read far enough to tell its format."""
    encoded = base64.b64encode(JPEG).decode()
    assert _url(Message.user("what is this?", images=[encoded])) == (
        f"data:image/jpeg;base64,{encoded}"
    )


def test_urls_pass_through_unchanged() -> None:
    """data: and http(s): URLs are sent as given; the caller chose their media type."""
    urls = ["data:image/heic;base64,AAAA", "https://example.com/cat.jpg"]
    message = Message.user("two", images=list(urls))
    content = message.to_api_dict()["content"]
    assert [part["image_url"]["url"] for part in content[1:]] == urls


def test_pdf_bytes_are_refused_naming_the_format() -> None:
    """Bytes of a known non-image format are refused at construction, named."""
    with pytest.raises(LLMUsageError) as info:
        Message.user("read this", images=[b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"])
    assert str(info.value) == (
        "images[0] is a PDF document, which a model does not take as an image: send PNG, "
        "JPEG, GIF or WebP bytes (or a data: or http(s): URL)"
    )


def test_unknown_bytes_are_refused_showing_their_first_bytes() -> None:
    """Bytes of no known format are refused, with the bytes they start with."""
    with pytest.raises(LLMUsageError) as info:
        Message.user("what?", images=[b"hello world, not an image"])
    assert str(info.value) == (
        "images[0] is not a PNG, JPEG, GIF or WebP image (it starts with 68 65 6c 6c 6f 20 77 "
        "6f, b'hello wo'): send PNG, JPEG, GIF or WebP bytes (or a data: or http(s): URL)"
    )


def test_a_string_that_is_not_base64_is_refused() -> None:
    """A file name where base64 text belongs is refused with the fix."""
    with pytest.raises(LLMUsageError) as info:
        Message.user("what?", images=["cat.png"])
    assert str(info.value) == (
        "images[0] is the string 'cat.png', which is neither base64 image data nor a data: or "
        "http(s): URL; to send a file, pass its bytes (Path(...).read_bytes())"
    )


@given(st.binary(min_size=1, max_size=64))
def test_any_bytes_are_either_a_known_format_or_refused(data: bytes) -> None:
    """Every byte string gets one of the four media types or an LLMUsageError, never an
    image/png guess."""
    known = data.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    )
    if known:
        media_types = {"image/png", "image/jpeg", "image/gif", "image/webp"}
        assert _messages.image_media_type(data) in media_types
    else:
        with pytest.raises(LLMUsageError):
            _messages.image_media_type(data)


@given(st.binary(max_size=64))
def test_png_bytes_round_trip_through_the_data_url(tail: bytes) -> None:
    """Whatever follows a PNG signature, the data URL carries the bytes exactly."""
    data = b"\x89PNG\r\n\x1a\n" + tail
    url = _url(Message.user("x", images=[data]))
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == data


async def test_a_jpeg_is_sent_as_image_jpeg() -> None:
    """On the wire, a JPEG's data URL says image/jpeg."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            await client.chat([Message.user("what is this?", images=[JPEG])])
        sent = server.chat_requests[0].json["messages"][0]["content"][1]
    assert sent["image_url"]["url"] == f"data:image/jpeg;base64,{base64.b64encode(JPEG).decode()}"


# --- what may be sent ---------------------------------------------------------------------


async def _chat_error(messages: Any) -> str:
    """The LLMUsageError chat() raises for ``messages``, with nothing sent."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError) as info:
                await client.chat(messages)
        assert server.chat_requests == []
    return str(info.value)


async def test_chat_with_a_bare_string_suggests_a_list_of_messages() -> None:
    """chat("hi") is refused: a string is not a list of messages."""
    assert await _chat_error("hi") == (
        "messages is the string 'hi', not a list of messages; pass [Message.user('hi')]"
    )


async def test_chat_with_a_tuple_message_says_what_a_message_is() -> None:
    """chat([("user", "hi")]) is refused: a message is a Message or a mapping with a role."""
    assert await _chat_error([("user", "hi")]) == (
        "messages[0] is a tuple (('user', 'hi')); a message must be a Message (Message.user("
        "...), ...) or a mapping with a 'role'"
    )


async def test_chat_with_a_tuple_for_messages_is_refused() -> None:
    """chat(("user", "hi")) (a tuple of two strings) is refused at its first element."""
    assert await _chat_error(("user", "hi")) == (
        "messages[0] is the string 'user', not a message; messages must be a list of messages, "
        "like [Message.user('...')]"
    )


async def test_chat_with_one_message_not_in_a_list_is_refused() -> None:
    """A single Message (which pydantic would iterate as its fields) is refused."""
    assert await _chat_error(Message.user("hi")) == (
        "messages is one Message, not a list of messages; pass [message]"
    )


async def test_chat_with_an_unknown_role_names_the_valid_ones() -> None:
    """A mapping with role 'bot' is refused, naming the roles there are."""
    assert await _chat_error([{"role": "bot", "content": "hi"}]) == (
        "messages[0] has role 'bot'; a message's role is 'system', 'user', 'assistant', "
        "'tool' or 'developer'"
    )


async def test_chat_with_a_mapping_without_a_role_is_refused() -> None:
    """A mapping with no role at all is refused."""
    assert await _chat_error([{"content": "hi"}]) == (
        "messages[0] has no 'role'; a message's role is 'system', 'user', 'assistant', "
        "'tool' or 'developer'"
    )


async def test_chat_with_a_user_mapping_without_content_is_refused() -> None:
    """A user message (as a mapping) needs text content."""
    assert await _chat_error([{"role": "user", "content": None}]) == (
        "messages[0] is a user message without content; a user message needs its text "
        "(content='...')"
    )


async def test_chat_with_an_assistant_mapping_with_nothing_is_refused() -> None:
    """An assistant message (as a mapping) needs content or tool calls."""
    assert await _chat_error([{"role": "user", "content": "hi"}, {"role": "assistant"}]) == (
        "messages[1] is an assistant message with neither content nor tool calls; give it "
        "its text, or the tool_calls it made"
    )


async def test_chat_with_content_of_the_wrong_type_is_refused() -> None:
    """Content must be text or a list of content parts, not a number."""
    assert await _chat_error([{"role": "user", "content": 5}]) == (
        "messages[0] has content of type int; content is text (or a list of content parts)"
    )


def test_user_message_without_content_is_refused_at_construction() -> None:
    """Message(role="user", content=None) raises LLMUsageError when it is built."""
    with pytest.raises(LLMUsageError) as info:
        Message(role="user", content=None)
    assert str(info.value) == (
        "a user message needs its text (content='...'); only an assistant message that calls "
        "tools may have content=None"
    )


def test_assistant_message_with_neither_content_nor_tool_calls_is_refused() -> None:
    """Message.assistant(None) without tool calls raises LLMUsageError when it is built."""
    with pytest.raises(LLMUsageError) as info:
        Message.assistant(None)
    assert str(info.value) == (
        "an assistant message needs content or tool calls; Message.assistant(None) is only "
        "for a message that calls tools (tool_calls=[...])"
    )


def test_message_with_an_unknown_role_is_refused_at_construction() -> None:
    """Message(role="bot") raises LLMUsageError (not a pydantic error) naming the roles."""
    with pytest.raises(LLMUsageError) as info:
        Message(role="bot", content="hi")  # type: ignore[arg-type]
    assert str(info.value) == (
        "a message's role is 'system', 'user', 'assistant' or 'tool', not 'bot'"
    )


def test_messages_that_can_be_sent_pass_unchanged() -> None:
    """Valid messages of every kind, as Message or mapping, come back as the same list."""
    messages: list[Any] = [
        Message.system("Be brief."),
        Message.user("hi"),
        Message.assistant(None, tool_calls=[CALL]),
        Message.tool("sunny", tool_call_id="call_1"),
        Message.assistant(""),
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [CALL.to_api_dict()]},
        {"role": "user", "content": "", "images": ["iVBORw0KGgo="]},
        Message(role="user", images=(PNG,)),
    ]
    assert _messages.check_messages(iter(messages)) == messages


async def test_router_chat_with_a_bare_string_is_refused() -> None:
    """The Router refuses chat("hi") too, with the client's message, before any endpoint is
    tried."""
    async with TestServer(dialect="openai") as server:
        async with Router([server.url], model="gpt-4o-mini", max_retries=0) as router:
            with pytest.raises(LLMUsageError) as info:
                await router.chat("hi")  # type: ignore[arg-type]
        assert server.chat_requests == []
    assert str(info.value) == (
        "messages is the string 'hi', not a list of messages; pass [Message.user('hi')]"
    )


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_run_tools_checks_messages_too() -> None:
    """run_tools refuses a bare string as chat() does."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError) as info:
                await client.run_tools("hi", [weather])  # type: ignore[arg-type]
    assert str(info.value) == (
        "messages is the string 'hi', not a list of messages; pass [Message.user('hi')]"
    )


async def test_parse_checks_messages_too() -> None:
    """parse refuses a bare string as chat() does."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError) as info:
                await client.parse("hi", int)  # type: ignore[arg-type]
    assert str(info.value) == (
        "messages is the string 'hi', not a list of messages; pass [Message.user('hi')]"
    )
