"""``parse``: structured output validated with pydantic, with a repair round, on the test
server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from llmtap import LLMUsageError, Message
from llmtap._errors import LLMParseError
from llmtap._parse import strict_schema, unfence
from llmtap.testing import Reply, TestServer
from tests.conftest import make_client

ASK = [Message.user("The biggest city in France?")]


class City(BaseModel):
    """A city."""

    name: str
    population: int


class StrictCity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    population: int


class Pair(TypedDict):
    left: int
    right: int


@dataclasses.dataclass
class Span:
    start: int
    end: int = 0


CITY_SCHEMA = {
    "type": "object",
    "description": "A city.",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
}
PARIS = '{"name": "Paris", "population": 2100000}'


async def _parse(reply_texts: list[str], output_type: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Parse against an OpenAI-style server scripted with these replies: (value, server)."""
    async with TestServer(dialect="openai") as server:
        server.script(*[Reply(text=text) for text in reply_texts])
        async with make_client(server.url) as client:
            value = await client.parse(ASK, output_type, **kwargs)
    return value, server


async def test_valid_reply_first_time() -> None:
    """A reply that validates is returned as the model, after one request."""
    city, server = await _parse([PARIS], City)
    assert city == City(name="Paris", population=2100000)
    assert len(server.chat_requests) == 1


async def test_request_carries_the_json_schema_response_format() -> None:
    """OpenAI-style servers get ``response_format`` json_schema; a model that allows extra
    keys is not strict."""
    _, server = await _parse([PARIS], City)
    assert server.chat_requests[0].json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "City", "schema": CITY_SCHEMA, "strict": False},
    }


async def test_closed_model_is_sent_strict() -> None:
    """All properties required and extras forbidden: ``strict: True``."""
    _, server = await _parse([PARIS], StrictCity)
    sent = server.chat_requests[0].json["response_format"]["json_schema"]
    assert (sent["strict"], sent["schema"]["additionalProperties"]) == (True, False)


async def test_native_ollama_gets_the_schema_as_format() -> None:
    """Ollama's native API gets the schema itself as ``format``."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text=PARIS))
        async with make_client(server.url, api="ollama") as client:
            city = await client.parse(ASK, City)
    request = server.chat_requests[0]
    assert (request.path, request.json["format"]) == ("/api/chat", CITY_SCHEMA)
    assert "response_format" not in request.json
    assert city.name == "Paris"


async def test_invalid_reply_is_repaired() -> None:
    """An invalid reply costs one more request, which shows the model its reply and the
    validation errors."""
    city, server = await _parse(['{"name": "Paris"}', PARIS], City)
    assert city == City(name="Paris", population=2100000)
    assert len(server.chat_requests) == 2
    assert server.chat_requests[1].json["messages"] == [
        {"role": "user", "content": "The biggest city in France?"},
        {"role": "assistant", "content": '{"name": "Paris"}'},
        {
            "role": "user",
            "content": "Your reply does not match the required JSON schema:\n"
            "population: Field required\n"
            "Reply again with only the corrected JSON, and no other text.",
        },
    ]
    assert server.chat_requests[1].json["response_format"]["json_schema"]["name"] == "City"


async def test_invalid_twice_raises_with_text_and_errors() -> None:
    """Still invalid after the repair round: LLMParseError with the last reply and its
    errors."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="Paris!"), Reply(text='{"name": "Paris", "population": "many"}'))
        async with make_client(server.url) as client:
            with pytest.raises(LLMParseError) as info:
                await client.parse(ASK, City)
    assert info.value.raw_text == '{"name": "Paris", "population": "many"}'
    assert [(e["type"], e["loc"], e["input"]) for e in info.value.errors] == [
        ("int_parsing", ("population",), "many")
    ]
    assert info.value.message == (
        "The model's reply did not validate as City after 2 attempts:\n"
        "population: Input should be a valid integer, unable to parse string as an integer "
        '(got "many")\n'
        "The reply is in .raw_text and the errors in .errors; a clearer prompt, a larger model "
        "or more repair_rounds may help"
    )
    assert len(server.chat_requests) == 2


async def test_repair_rounds_zero_asks_once() -> None:
    """repair_rounds=0: one request, then the error (here: not JSON at all)."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(text="Paris"), Reply(text=PARIS))
        async with make_client(server.url) as client:
            with pytest.raises(LLMParseError) as info:
                await client.parse(ASK, City, repair_rounds=0)
    assert [e["type"] for e in info.value.errors] == ["json_invalid"]
    assert (info.value.raw_text, len(server.chat_requests)) == ("Paris", 1)


async def test_fenced_json_is_unwrapped() -> None:
    """A reply wrapped in a ```json fence (with prose around it) still validates."""
    city, server = await _parse([f"Here you go:\n```json\n{PARIS}\n```\nAnything else?"], City)
    assert city.population == 2100000
    assert len(server.chat_requests) == 1


def test_unfence_leaves_plain_json_alone() -> None:
    """Text that starts as JSON is taken as it is, even if it contains a fence."""
    assert unfence('  ["```json\\nx\\n```"]  ') == '["```json\\nx\\n```"]'


async def test_other_types_than_models() -> None:
    """``list[int]``, a TypedDict and a dataclass parse too."""
    numbers, server = await _parse(["[1, 2, 3]"], list[int])
    assert numbers == [1, 2, 3]
    assert server.chat_requests[0].json["response_format"]["json_schema"] == {
        "name": "list",
        "schema": {"type": "array", "items": {"type": "integer"}},
        "strict": False,
    }
    pair, _ = await _parse(['{"left": 1, "right": 2}'], Pair)
    assert pair == {"left": 1, "right": 2}
    span, _ = await _parse(['{"start": 4}'], Span)
    assert span == Span(start=4, end=0)


async def test_parameters_pass_through_to_every_request() -> None:
    """Extra parameters reach both the first and the repair request."""
    _, server = await _parse(["{}", PARIS], City, temperature=0, seed=3)
    assert [(r.json["temperature"], r.json["seed"]) for r in server.chat_requests] == [
        (0, 3),
        (0, 3),
    ]


def test_strict_needs_every_nested_object_closed() -> None:
    """Strict mode qualifies only when every object, nested ones too, is closed and fully
    required; the root must be an object."""
    closed = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    assert strict_schema({**closed, "properties": {"inner": closed}, "required": ["inner"]})
    open_inner = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert not strict_schema({**closed, "properties": {"inner": open_inner}, "required": ["inner"]})
    assert not strict_schema({**closed, "properties": {"a": {"type": "integer"}}})
    assert not strict_schema({"type": "array", "items": {"type": "integer"}})


async def test_response_format_of_the_caller_is_refused(closed_port_url: str) -> None:
    """parse() builds response_format itself."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMUsageError) as info:
            await client.parse(ASK, City, response_format={"type": "json_object"})
    assert str(info.value) == (
        "parse() sets response_format itself from the type you pass; leave it out"
    )


async def test_a_type_pydantic_cannot_describe_is_refused(closed_port_url: str) -> None:
    """A type with no JSON schema is a usage error, before any request."""

    class Opaque:
        pass

    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMUsageError) as info:
            await client.parse(ASK, Opaque)
    assert str(info.value).startswith("parse() cannot use <class ")


async def test_a_reply_cut_by_max_tokens_is_not_repaired() -> None:
    """A reply that stopped at max_tokens (finish_reason 'length') and does not validate
    raises at once, saying so and what to do; no repair round is spent on it."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text='{"name": "Paris", "popul', finish_reason="length", usage=(9, 8)))
        async with make_client(server.url, max_tokens=8) as client:
            with pytest.raises(LLMParseError) as info:
                await client.parse(ASK, City)
        requests = len(server.chat_requests)
    assert requests == 1
    assert info.value.message == (
        "The model's reply was cut at max_tokens (finish_reason='length') after 8 tokens, "
        "before its JSON for City was complete; raise max_tokens and ask again. The reply so "
        "far is in .raw_text"
    )
    assert info.value.raw_text == '{"name": "Paris", "popul'
    assert [error["type"] for error in info.value.errors] == ["json_invalid"]


async def test_a_repair_reply_cut_by_max_tokens_stops_the_repairs() -> None:
    """When the repair round's reply is the one cut short, it raises the same way, after
    two requests, though repair rounds were left."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(text='{"name": "Paris"}'),
            Reply(text='{"name": "Paris", "popul', finish_reason="length", usage=(30, 12)),
        )
        async with make_client(server.url) as client:
            with pytest.raises(LLMParseError) as info:
                await client.parse(ASK, City, repair_rounds=3)
        requests = len(server.chat_requests)
    assert requests == 2
    assert info.value.message == (
        "The model's reply was cut at max_tokens (finish_reason='length') after 12 tokens, "
        "before its JSON for City was complete; raise max_tokens and ask again. The reply so "
        "far is in .raw_text"
    )


async def test_a_reply_that_validates_is_kept_even_at_the_length_limit() -> None:
    """A reply that validates is returned although the limit was reached with it."""
    value, server = await _parse_replies([Reply(text=PARIS, finish_reason="length")], City)
    assert (value, len(server.chat_requests)) == (City(name="Paris", population=2100000), 1)


async def _parse_replies(replies: list[Reply], output_type: Any) -> tuple[Any, Any]:
    async with TestServer(dialect="openai") as server:
        server.script(*replies)
        async with make_client(server.url) as client:
            value = await client.parse(ASK, output_type)
    return value, server
