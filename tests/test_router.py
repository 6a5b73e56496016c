"""Router: many loopback servers as one client — failover, spreading, model-awareness, health,
limits, retry budget, stats, configuration and shutdown. Every request goes over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmtap import (
    EndpointStats,
    LLMClient,
    LLMConfig,
    LLMConnectionError,
    LLMRateLimitError,
    LLMResponseError,
    LLMRouterBusyError,
    LLMStreamInterrupted,
    LLMUsageError,
    Message,
    Router,
)
from llmtap._config import ConfigFileError
from llmtap.testing import Dialect, Reply, TestServer, ToolCallSpec

MODEL = "llama3.2"
HELLO = [Message.user("hello")]
TEXT = "alpha beta gamma delta epsilon zeta"

#: The model as each dialect lists it (Ollama adds the tag).
LISTED = {"ollama": "llama3.2:latest", "llamacpp": MODEL, "vllm": MODEL, "openai": MODEL}


def config(url: str, **overrides: Any) -> LLMConfig:
    """An endpoint with short deadlines and the shared model."""
    settings: dict[str, Any] = {
        "endpoint": url,
        "model": MODEL,
        "connect_timeout": 2.0,
        "first_token_timeout": 5.0,
        "idle_timeout": 5.0,
        "preflight_timeout": 5.0,
    }
    settings.update(overrides)
    return LLMConfig(**settings)


def make_router(servers: list[TestServer], **options: Any) -> Router:
    """A router over ``servers`` with a short cooldown, so that tests of health run quickly."""
    options.setdefault("cooldown", 0.2)
    options.setdefault("max_cooldown", 1.0)
    return Router([config(server.url) for server in servers], **options)


@contextlib.asynccontextmanager
async def serving(*dialects: Dialect, warm: bool = True) -> AsyncIterator[list[TestServer]]:
    """One TestServer per dialect, each serving MODEL (Ollama ones with it loaded if ``warm``)."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for dialect in dialects:
            loaded = [LISTED["ollama"]] if dialect == "ollama" and warm else []
            server = TestServer(dialect=dialect, models=[LISTED[dialect]], loaded_models=loaded)
            servers.append(await stack.enter_async_context(server))
        yield servers


def chats(server: TestServer) -> int:
    """How many chat requests ``server`` received."""
    return len(server.chat_requests)


class Events(logging.Handler):
    """Collects llmtap's structured log events; lets a test wait for one or react to one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.hooks: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._flags: dict[str, asyncio.Event] = {}

    def emit(self, record: logging.LogRecord) -> None:
        name = record.getMessage().split(" ", 1)[0]
        fields: dict[str, Any] = getattr(record, "llmtap", {})
        self.seen.append((name, fields))
        for hook in self.hooks.get(name, []):
            hook(fields)
        if name in self._flags:
            self._flags[name].set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.seen if event == name]

    def on(self, name: str, hook: Callable[[dict[str, Any]], None]) -> None:
        self.hooks.setdefault(name, []).append(hook)

    async def wait(self, name: str, within: float = 10.0) -> None:
        """Until an event called ``name`` has been logged (a hang guard, not a measurement)."""
        flag = self._flags.setdefault(name, asyncio.Event())
        if self.named(name):
            flag.set()
        async with asyncio.timeout(within):
            await flag.wait()


@pytest.fixture
def events() -> Iterator[Events]:
    logger = logging.getLogger("llmtap")
    handler = Events()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def read(router: Router, **params: Any) -> tuple[str, str | None, Exception | None]:
    """Stream one answer: the text delivered, the endpoint it came from, and the error if any."""
    pieces: list[str] = []
    stream = router.stream(HELLO, **params)
    try:
        async with stream:
            async for piece in stream.text():
                pieces.append(piece)
    except LLMStreamInterrupted as exc:
        return "".join(pieces), stream.endpoint, exc
    return "".join(pieces), stream.endpoint, None


# --- failover under a killed endpoint ---------------------------------------------------------


async def test_killed_endpoint_mid_run_moves_or_interrupts_and_comes_back(
    no_waits: None, events: Events
) -> None:
    """One of three servers is killed under 300 streams: streams that had output raise
    LLMStreamInterrupted with a prefix of the answer, the others complete elsewhere; no attempt
    reaches it while it cools down, and it takes requests again once restarted."""
    async with serving("ollama", "llamacpp", "vllm") as (a, b, c):
        for server in (a, b, c):
            server.script(
                *(
                    Reply(text=TEXT, delay_before_headers=0.03 * (k % 6), delay_between=0.01)
                    for k in range(300)
                )
            )
        async with make_router([a, b, c], cooldown=0.25, retry_budget_min=1000) as router:
            b_name = router.stats()[1].name
            b_delivering = asyncio.Event()
            attempts_when_down: list[int] = []
            events.on(
                "router_endpoint_down",
                lambda _: attempts_when_down.append(router.stats()[1].requests),
            )

            async def one() -> tuple[str, str | None, Exception | None]:
                pieces: list[str] = []
                stream = router.stream(HELLO)
                try:
                    async with stream:
                        async for piece in stream.text():
                            pieces.append(piece)
                            if stream.endpoint == b_name:
                                b_delivering.set()
                except LLMStreamInterrupted as exc:
                    return "".join(pieces), stream.endpoint, exc
                return "".join(pieces), stream.endpoint, None

            first_wave = [asyncio.create_task(one()) for _ in range(240)]
            async with asyncio.timeout(10):
                await b_delivering.wait()
            await b.stop()
            await events.wait("router_endpoint_down")
            second_wave = [asyncio.create_task(one()) for _ in range(60)]
            outcomes = await asyncio.gather(*first_wave, *second_wave)
            stats = router.stats()

            interrupted = [(text, exc) for text, _, exc in outcomes if exc is not None]
            assert interrupted
            for text, exc in interrupted:
                assert isinstance(exc, LLMStreamInterrupted)
                assert exc.partial_text == text
                assert TEXT.startswith(text)
                assert text != TEXT
            assert {where for _, where, exc in outcomes if exc is not None} == {b_name}
            assert [text for text, _, exc in outcomes if exc is None] == [TEXT] * (
                300 - len(interrupted)
            )
            moved = sum(s.requests for s in stats) - 300
            assert moved > 0
            assert stats[1].failed == len(interrupted) + moved
            assert (stats[0].failed, stats[2].failed) == (0, 0)
            assert attempts_when_down == [stats[1].requests]
            assert stats[1].state == "cooling_down"

            before = chats(b)
            await b.start()
            await events.wait("router_endpoint_up")
            await asyncio.gather(*(router.chat(HELLO) for _ in range(30)))
            assert chats(b) - before == 10


async def test_recovered_endpoint_returns_at_the_first_probe_after_it_is_healthy(
    events: Events,
) -> None:
    """A server that is failing when the router starts comes back at the first probe after it
    is healthy again: one cooldown period at most."""
    async with serving("vllm", "llamacpp") as (a, b):
        b.loading = True  # llama.cpp answers 503 on every route while it loads
        events.on("router_probe_failed", lambda _: setattr(b, "loading", False))
        async with make_router([a, b], cooldown=0.05) as router:
            await router.chat(HELLO)
            await events.wait("router_endpoint_up")
            assert len(events.named("router_probe_failed")) == 1
            assert events.named("router_endpoint_up")[0]["probes"] == 2
            assert router.stats()[1].state == "healthy"


async def test_cooldown_doubles_while_probes_fail_up_to_the_cap(events: Events) -> None:
    """Each failed probe doubles the wait before the next, up to max_cooldown."""
    async with serving("vllm", "llamacpp") as (a, b):
        b.loading = True
        events.on(
            "router_probe_failed",
            lambda _: setattr(b, "loading", len(events.named("router_probe_failed")) < 4),
        )
        async with make_router([a, b], cooldown=0.02, max_cooldown=0.1) as router:
            await router.chat(HELLO)
            await events.wait("router_endpoint_up")
        assert events.named("router_endpoint_down")[0]["cooldown"] == 0.02
        waits = [f["next_probe_in"] for f in events.named("router_probe_failed")]
        assert waits == [0.04, 0.08, 0.1, 0.1]


# --- spreading ---------------------------------------------------------------------------------


async def test_least_busy_spreads_300_requests_evenly() -> None:
    """least_busy over three equal servers gives each within 15% of a third."""
    async with serving("vllm", "vllm", "vllm") as servers:
        for server in servers:
            server.script(*(Reply(text=TEXT, delay_between=0.005) for _ in range(300)))
        async with make_router(servers) as router:
            await asyncio.gather(*(router.chat(HELLO) for _ in range(300)))
    for server in servers:
        assert 85 <= chats(server) <= 115


async def test_least_busy_gives_a_slow_server_fewer_requests() -> None:
    """A server that answers slowly holds its requests longer, so it is picked less often."""
    async with serving("vllm", "vllm", "vllm") as (fast1, fast2, slow):
        slow.script(*(Reply(text=TEXT, delay_between=0.02) for _ in range(300)))
        async with make_router([fast1, fast2, slow]) as router:

            async def worker() -> None:
                for _ in range(10):
                    await router.chat(HELLO)

            await asyncio.gather(*(worker() for _ in range(30)))
    assert chats(fast1) + chats(fast2) + chats(slow) == 300
    assert chats(slow) < min(chats(fast1), chats(fast2)) / 2


async def test_round_robin_follows_weights() -> None:
    """round_robin with weights 3:1:1 sends exactly 6, 2 and 2 of 10 requests."""
    async with serving("vllm", "llamacpp", "vllm") as servers:
        async with make_router(servers, strategy="round_robin", weights=[3, 1, 1]) as router:
            for _ in range(10):
                await router.chat(HELLO)
    assert [chats(s) for s in servers] == [6, 2, 2]


async def test_round_robin_reads_a_weight_per_endpoint() -> None:
    """An endpoint given as a mapping can carry its own weight."""
    async with serving("vllm", "vllm") as (a, b):
        endpoints: list[dict[str, Any] | LLMConfig] = [
            {"endpoint": a.url, "model": MODEL, "weight": 2},
            config(b.url),
        ]
        async with Router(endpoints, strategy="round_robin") as router:
            for _ in range(6):
                await router.chat(HELLO)
    assert (chats(a), chats(b)) == (4, 2)


async def test_failover_uses_the_first_endpoint_until_it_fails(no_waits: None) -> None:
    """failover sends everything to the first endpoint, and to the next once it is down."""
    async with serving("vllm", "llamacpp", "vllm") as (a, b, c):
        async with make_router(
            [a, b, c], strategy="failover", cooldown=30.0, max_cooldown=60.0
        ) as router:
            for _ in range(4):
                await router.chat(HELLO)
            await a.stop()
            for _ in range(4):
                await router.chat(HELLO)
            assert [s.state for s in router.stats()] == ["cooling_down", "healthy", "healthy"]
    assert (chats(a), chats(b), chats(c)) == (4, 4, 0)


# --- models --------------------------------------------------------------------------------------


async def test_a_model_on_one_endpoint_is_always_routed_there() -> None:
    """Only the endpoint that lists a model gets the requests for it."""
    async with serving("ollama", "ollama", "ollama") as (a, b, c):
        b.models.append("qwen3:latest")
        async with make_router([a, b, c]) as router:
            results = await asyncio.gather(*(router.chat(HELLO, model="qwen3") for _ in range(20)))
    assert [r.model for r in results] == ["qwen3"] * 20
    assert (chats(a), chats(b), chats(c)) == (0, 20, 0)


async def test_a_warm_endpoint_is_preferred_to_cold_ones() -> None:
    """With equal load, the Ollama endpoint that has the model in memory (/api/ps) answers."""
    async with serving("ollama", "ollama", "ollama", warm=False) as (a, b, c):
        c.loaded_models = [LISTED["ollama"]]
        async with make_router([a, b, c]) as router:
            for _ in range(10):
                await router.chat(HELLO)
    assert (chats(a), chats(b), chats(c)) == (0, 0, 10)


async def test_a_model_pulled_later_is_found_without_waiting_for_the_refresh() -> None:
    """A request for a model no listing has re-reads the listings at once."""
    async with serving("ollama", "ollama") as (a, b):
        async with make_router([a, b], refresh_interval=3600) as router:
            await router.chat(HELLO)
            a.models.append("qwen3:latest")
            result = await router.chat(HELLO, model="qwen3")
    assert result.model == "qwen3"
    assert a.chat_requests[-1].json["model"] == "qwen3"
    assert [r.json["model"] for r in b.chat_requests] in ([], [MODEL])


async def test_no_endpoint_with_the_model_is_a_404_naming_the_listings() -> None:
    """A model that no endpoint lists raises LLMResponseError 404 with every listing."""
    async with serving("ollama", "vllm") as (a, b):
        async with make_router([a, b]) as router:
            with pytest.raises(LLMResponseError) as caught:
                await router.chat(HELLO, model="mistral")
    assert caught.value.status_code == 404
    assert caught.value.message == (
        f"No endpoint serves 'mistral'. Listings: {a.url}: llama3.2:latest; {b.url}: llama3.2. "
        "Pull the model on one of them (`ollama pull <model>`) or ask for a listed one"
    )
    assert (chats(a), chats(b)) == (0, 0)


# --- moving before output, never after -------------------------------------------------------


async def test_a_failure_before_output_moves_to_another_endpoint(no_waits: None) -> None:
    """A 503 before any output sends the request to another endpoint, and the failing one is
    taken out."""
    async with serving("vllm", "llamacpp") as (a, b):
        a.script(Reply(status=503))
        async with make_router([a, b], strategy="failover") as router:
            text, where, error = await read(router)
            stats = router.stats()
    assert (text, where, error) == ("echo: hello", b.url, None)
    assert [s.state for s in stats] == ["cooling_down", "healthy"]
    assert (chats(a), chats(b)) == (1, 1)


async def test_a_500_naming_the_request_is_raised_once_and_takes_no_endpoint_out(
    no_waits: None, events: Events
) -> None:
    """Issue 21 item 1: a 500 whose message names the request (llama-server's "image input
    is not supported") is the request's fault: raised after one attempt, not sent to the other
    endpoint, no endpoint taken out, and the next request is answered."""
    async with serving("llamacpp", "llamacpp") as (a, b):
        a.script(Reply(status=500, error_message="image input is not supported"))
        async with make_router([a, b], strategy="failover") as router:
            with pytest.raises(LLMResponseError) as info:
                await router.chat(HELLO)
            states = [s.state for s in router.stats()]
            result = await router.chat(HELLO)
    assert (info.value.status_code, info.value.server_message) == (
        500,
        "image input is not supported",
    )
    assert states == ["healthy", "healthy"]
    assert events.named("router_endpoint_down") == []
    assert (result.text, chats(a), chats(b)) == ("echo: hello", 2, 0)


async def test_a_plain_500_moves_to_the_other_endpoint_and_takes_the_first_out(
    no_waits: None, events: Events
) -> None:
    """The control: a plain 500 Internal Server Error says the server is in trouble: the
    request goes to the other endpoint, and the first is taken out."""
    async with serving("llamacpp", "llamacpp") as (a, b):
        a.script(Reply(status=500))
        async with make_router([a, b], strategy="failover") as router:
            result = await router.chat(HELLO)
            states = [s.state for s in router.stats()]
    assert (result.text, chats(a), chats(b)) == ("echo: hello", 1, 1)
    assert states == ["cooling_down", "healthy"]
    down = [(e["endpoint"], e["error"]) for e in events.named("router_endpoint_down")]
    assert down == [(a.url, "LLMResponseError: The server answered 500: Internal Server Error")]


async def test_a_failure_after_output_raises_and_is_not_moved(no_waits: None) -> None:
    """A connection reset after text reached the caller raises LLMStreamInterrupted with that
    text; the request is not sent anywhere else."""
    async with serving("vllm", "llamacpp") as (a, b):
        a.script(Reply(text=TEXT, reset_after=3))
        async with make_router([a, b], strategy="failover") as router:
            text, where, error = await read(router)
    assert isinstance(error, LLMStreamInterrupted)
    assert (text, error.partial_text, where) == ("alpha beta", "alpha beta", a.url)
    assert (chats(a), chats(b)) == (1, 0)


async def test_chat_starts_over_on_another_endpoint_after_a_break_mid_answer(
    no_waits: None,
) -> None:
    """chat() shows nothing before its result, so an answer broken mid-way is asked again of
    another endpoint, whole."""
    async with serving("vllm", "llamacpp") as (a, b):
        a.script(Reply(text=TEXT, reset_after=3))
        b.script(Reply(text=TEXT))
        async with make_router([a, b], strategy="failover") as router:
            result = await router.chat(HELLO)
    assert result.text == TEXT
    assert result.server == "llama.cpp"


async def test_resume_continues_a_broken_answer_on_another_endpoint(no_waits: None) -> None:
    """With resume=True, an answer broken after text is continued (an assistant prefill) by
    another endpoint, and the caller sees every word once."""
    async with serving("vllm", "llamacpp") as (a, b):
        a.script(Reply(text=TEXT, reset_after=3))
        b.script(Reply(text=" gamma delta epsilon zeta"))
        async with make_router([a, b], strategy="failover") as router:
            text, where, error = await read(router, resume=True)
    assert (text, where, error) == (TEXT, b.url, None)
    assert b.chat_requests[0].json["messages"][-1] == {
        "role": "assistant",
        "content": "alpha beta",
    }


async def test_non_streaming_chat_moves_after_a_refused_connection(
    no_waits: None, closed_port_url: str
) -> None:
    """chat(stream=False) goes to the next endpoint when the first refuses the connection."""
    async with serving("vllm") as (a,):
        endpoints = [config(closed_port_url), config(a.url)]
        async with Router(endpoints, strategy="failover") as router:
            result = await router.chat(HELLO, stream=False)
            states = [s.state for s in router.stats()]
    assert result.text == "echo: hello"
    assert states == ["cooling_down", "healthy"]


async def test_raw_chunks_move_before_the_first_chunk(no_waits: None) -> None:
    """stream_chat_with_retry moves a request whose first attempt failed before any chunk;
    stream_chat does not retry."""
    async with serving("vllm", "llamacpp") as (a, b):
        a.script(Reply(status=500), Reply(status=500))
        async with make_router([a, b], strategy="failover", cooldown=30.0, max_cooldown=60.0) as r:
            chunks = [chunk async for chunk in r.stream_chat_with_retry(HELLO)]
            assert "".join(
                c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
            ) == ("echo: hello")
        async with make_router([a, b], strategy="failover") as single:
            with pytest.raises(LLMResponseError) as caught:
                _ = [chunk async for chunk in single.stream_chat(HELLO)]
    assert caught.value.status_code == 500
    assert (chats(a), chats(b)) == (2, 1)


async def test_every_endpoint_down_is_a_connection_error(
    no_waits: None, closed_port_url: str
) -> None:
    """When every endpoint is cooling down, a request fails at once with the reason."""
    other = closed_port_url.replace("127.0.0.1", "localhost")
    async with Router([config(closed_port_url), config(other)], cooldown=30.0) as router:
        with pytest.raises(LLMConnectionError) as caught:
            await router.chat(HELLO)
        stats = router.stats()
    assert [(s.state, s.requests) for s in stats] == [("cooling_down", 0)] * 2
    message = caught.value.message
    assert message.startswith(
        f"Every endpoint that serves 'llama3.2' is cooling down after failures "
        f"({closed_port_url}: LLMConnectionError: Cannot reach {closed_port_url} "
    )
    assert message.endswith(
        "Each comes back as soon as it answers a probe; check that the servers run"
    )


# --- limits and the retry budget --------------------------------------------------------------


async def test_a_full_endpoint_makes_a_request_wait_then_fail_busy() -> None:
    """With max_concurrency=1 taken by an open stream, another request waits queue_timeout and
    raises LLMRouterBusyError without being sent."""
    async with serving("vllm") as (a,):
        a.script(Reply(text=TEXT))
        async with make_router([a], max_concurrency=1, queue_timeout=0.05) as router:
            async with router.stream(HELLO) as holder:
                await anext(aiter(holder))
                with pytest.raises(LLMRouterBusyError) as caught:
                    await router.chat(HELLO)
    assert caught.value.message == (
        "Every endpoint that serves 'llama3.2' stayed at its max_concurrency for the whole "
        "queue_timeout (0.05 s); raise max_concurrency or queue_timeout, or add endpoints"
    )
    assert chats(a) == 1


async def test_a_queued_request_is_sent_when_a_slot_frees() -> None:
    """A request queued behind max_concurrency goes out as soon as the running one ends."""
    async with serving("vllm") as (a,):
        async with make_router([a], max_concurrency=1) as router:
            holder = router.stream(HELLO)
            async with holder:
                await anext(aiter(holder))
                queued = asyncio.create_task(router.chat([Message.user("next")]))
                await asyncio.sleep(0.05)
                assert (chats(a), router.stats()[0].in_flight) == (1, 1)
            result = await queued
    assert result.text == "echo: next"
    assert chats(a) == 2


async def test_the_retry_budget_limits_retries_during_an_outage(no_waits: None) -> None:
    """With nothing succeeding, 40 requests that could each be retried 3 times make at most
    retry_budget (20 %) of 40 retries, plus retry_budget_min per second over the 10 s window
    (0.2/s: 2): 10 retries in all, not 120."""
    async with serving("vllm", "vllm") as servers:
        for server in servers:
            server.script(*(Reply(status=429) for _ in range(100)))
        async with make_router(servers, max_retries=3, retry_budget_min=0.2) as router:
            for _ in range(40):
                with pytest.raises(LLMRateLimitError):
                    await router.chat(HELLO)
    assert sum(chats(s) for s in servers) == 40 + 10


async def test_every_request_deposits_into_the_retry_budget(no_waits: None) -> None:
    """The budget grows with the requests sent, finished or not (as Finagle's does), not only
    with the ones that succeeded: 20 requests that all fail earn 0.5 x 20 = 10 retries."""
    async with serving("vllm", "vllm") as servers:
        for server in servers:
            server.script(*(Reply(status=429) for _ in range(100)))
        async with make_router(
            servers, max_retries=3, retry_budget=0.5, retry_budget_min=0
        ) as router:
            for _ in range(20):
                with pytest.raises(LLMRateLimitError):
                    await router.chat(HELLO)
    assert sum(chats(s) for s in servers) == 20 + 10


# --- stats and logs ------------------------------------------------------------------------------


async def test_stats_report_state_load_outcomes_and_time_to_first_token(no_waits: None) -> None:
    """stats() gives each endpoint's state, requests in flight, attempts, outcomes, mean time
    to first token and listing."""
    async with serving("vllm", "llamacpp") as (a, b):
        b.script(Reply(text=TEXT), Reply(status=500))
        async with make_router([a, b], strategy="round_robin", max_retries=0) as router:
            async with router.stream(HELLO) as open_stream:
                await anext(aiter(open_stream))
                assert [s.in_flight for s in router.stats()] == [1, 0]
            await router.chat(HELLO)
            await router.chat(HELLO)
            with pytest.raises(LLMResponseError):
                await router.chat(HELLO)
            stats = router.stats()
    assert stats[0] == EndpointStats(
        name=a.url,
        endpoint=a.url,
        state="healthy",
        in_flight=0,
        requests=2,
        completed=1,
        failed=0,
        mean_time_to_first_token=stats[0].mean_time_to_first_token,
        retry_in=None,
        models=(MODEL,),
    )
    assert (stats[1].state, stats[1].requests, stats[1].completed, stats[1].failed) == (
        "cooling_down",
        2,
        1,
        1,
    )
    assert stats[0].mean_time_to_first_token is not None
    assert stats[0].mean_time_to_first_token > 0
    assert stats[1].retry_in is not None


async def test_state_changes_are_logged_as_structured_events(events: Events) -> None:
    """Taking an endpoint out and bringing it back log router_endpoint_down and _up."""
    async with serving("vllm", "llamacpp") as (a, b):
        b.loading = True
        async with make_router([a, b], cooldown=0.02) as router:
            await router.chat(HELLO)
            b.loading = False
            await events.wait("router_endpoint_up")
    down = events.named("router_endpoint_down")
    assert down == [
        {
            "endpoint": b.url,
            "cooldown": 0.02,
            "error": f"LLMResponseError: The server at {b.url} is loading its model; it is "
            "not down. Try again in a few seconds",
        }
    ]
    assert [e["endpoint"] for e in events.named("router_endpoint_up")] == [b.url]


# --- configuration ---------------------------------------------------------------------------


def test_from_env_reads_comma_separated_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Router.from_env takes the endpoints from LLMTAP_ENDPOINTS, shared LLMConfig fields and
    Router options from its arguments."""
    monkeypatch.setenv("LLMTAP_ENDPOINTS", "http://gpu1:11434, http://gpu2:8000/v1 ,")
    monkeypatch.setenv("LLMTAP_MAX_RETRIES", "5")
    router = Router.from_env(model="qwen3", strategy="round_robin")
    assert [(c.endpoint, c.model, c.max_retries) for c in router.endpoints] == [
        ("http://gpu1:11434", "qwen3", 5),
        ("http://gpu2:8000/v1", "qwen3", 5),
    ]
    assert router.strategy == "round_robin"


def test_from_env_without_endpoints_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LLMTAP_ENDPOINTS, from_env raises a ValueError that names it."""
    monkeypatch.delenv("LLMTAP_ENDPOINTS", raising=False)
    with pytest.raises(ValueError, match=r"^LLMTAP_ENDPOINTS is not set: set it to the servers'"):
        Router.from_env()


async def test_from_file_reads_endpoint_tables(tmp_path: Path) -> None:
    """Router.from_file builds one endpoint per [[endpoints]] table, with the file's top-level
    keys as shared defaults and each table's name in stats()."""
    async with serving("vllm", "llamacpp") as (a, b):
        path = tmp_path / "config.toml"
        path.write_text(
            f'model = "{MODEL}"\nmax_retries = 4\n\n'
            f'[[endpoints]]\nname = "box-a"\nendpoint = "{a.url}"\n\n'
            f'[[endpoints]]\nname = "box-b"\nendpoint = "{b.url}"\nmax_retries = 1\n'
        )
        async with Router.from_file(path, strategy="failover") as router:
            result = await router.chat(HELLO)
            assert [(c.endpoint, c.model, c.max_retries) for c in router.endpoints] == [
                (a.url, MODEL, 4),
                (b.url, MODEL, 1),
            ]
            assert [s.name for s in router.stats()] == ["box-a", "box-b"]
    assert result.server == "vllm"


def test_from_file_needs_an_endpoint_in_every_table(tmp_path: Path) -> None:
    """A table without an endpoint URL is a ConfigFileError naming it."""
    path = tmp_path / "config.toml"
    path.write_text('[[endpoints]]\nendpoint = "http://a:1"\n\n[[endpoints]]\nname = "b"\n')
    with pytest.raises(ConfigFileError) as caught:
        Router.from_file(path)
    assert caught.value.key == "endpoints[1].endpoint"
    assert str(caught.value) == f"endpoints[1] in the config file {path} has no 'endpoint' URL"


def test_from_file_names_a_bad_value_by_its_table(tmp_path: Path) -> None:
    """A bad value in a table is a ConfigFileError naming the table and the key."""
    path = tmp_path / "config.toml"
    path.write_text('[[endpoints]]\nendpoint = "http://a:1"\nmax_retries = -1\n')
    with pytest.raises(ConfigFileError) as caught:
        Router.from_file(path)
    assert caught.value.key == "endpoints[0].max_retries"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"endpoints": []}, "endpoints must be a non-empty list of LLMConfig objects or URLs"),
        ({"strategy": "random"}, "strategy must be one of failover, least_busy, round_robin, "),
        ({"weights": [1.0]}, "weights has 1 values for 2 endpoints; give one each"),
        ({"weights": [1.0, 0.0]}, "the weight of endpoint 1 must be > 0"),
        ({"max_concurrency": 0}, "max_concurrency must be >= 1"),
        ({"cooldown": 10.0, "max_cooldown": 5.0}, "cooldown must be > 0 and <= max_cooldown"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(
    arguments: dict[str, Any], message: str
) -> None:
    """Out-of-range Router arguments raise ValueError saying which and what is allowed."""
    settings: dict[str, Any] = {"endpoints": ["http://a:1", "http://b:2"], **arguments}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        Router(**settings)


def test_repr_and_stats_hide_secrets() -> None:
    """Neither the repr nor stats() show an API key or a password in a URL."""
    router = Router(
        [
            LLMConfig(endpoint="http://user:hunter2@gpu1:11434"),
            LLMConfig(endpoint="http://gpu2:11434", api_key="sk-secret"),
        ]
    )
    shown = repr(router) + repr(router.stats())
    assert "hunter2" not in shown
    assert "sk-secret" not in shown
    assert router.stats()[0].endpoint == "http://user:***@gpu1:11434"


# --- the rest of the call surface ----------------------------------------------------------------


async def test_preflight_checks_every_endpoint() -> None:
    """preflight_check() returns one report per endpoint, or the error its check raised, and
    takes an unreachable endpoint out."""
    async with serving("ollama", "vllm") as (a, b):
        await b.stop()
        async with make_router([a, b]) as router:
            reports = await router.preflight_check()
            states = [s.state for s in router.stats()]
    first, second = reports
    assert not isinstance(first, Exception)
    assert (first.server, first.model, first.endpoint) == ("ollama", "llama3.2:latest", a.url)
    assert isinstance(second, LLMConnectionError)
    assert states == ["healthy", "cooling_down"]


async def test_embed_goes_to_endpoints_that_list_the_embedding_model(no_waits: None) -> None:
    """embed() sends each batch to an endpoint that lists the embedding model."""
    async with serving("ollama", "ollama") as (a, b):
        b.models.append("nomic-embed-text:latest")
        async with make_router([a, b]) as router:
            vectors = await router.embed(["one", "two"], model="nomic-embed-text")
    async with TestServer(dialect="ollama") as reference:
        async with LLMClient(config(reference.url, api="ollama")) as single:
            expected = await single.embed(["one", "two"], model="nomic-embed-text")
    assert vectors == expected
    assert len(vectors) == 2
    assert [r.path for r in b.requests if r.method == "POST"] == ["/api/embed"]
    assert [r.path for r in a.requests if r.method == "POST"] == []


async def test_run_tools_routes_each_round(no_waits: None) -> None:
    """run_tools() through the router: a round that fails before its answer moves to another
    endpoint, and the tool runs once."""
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    async with serving("vllm", "llamacpp") as (a, b):
        a.script(
            Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"}, id="call_1")]),
            Reply(status=503),
        )
        b.script(Reply(text="It is sunny."))
        async with make_router([a, b], strategy="failover") as router:
            run = await router.run_tools([Message.user("Weather in Paris?")], [get_weather])
    assert run.result.text == "It is sunny."
    assert calls == ["Paris"]
    assert b.chat_requests[0].json["messages"][-1]["content"] == "sunny"


async def test_parse_returns_a_validated_value() -> None:
    """parse() through the router validates the reply as the requested type."""

    class City(BaseModel):
        name: str
        population: int

    async with serving("vllm") as (a,):
        a.script(Reply(text='{"name": "Paris", "population": 2100000}'))
        async with make_router([a]) as router:
            city = await router.parse([Message.user("Biggest city in France?")], City)
    assert city == City(name="Paris", population=2100000)


# --- shutdown ------------------------------------------------------------------------------------


async def test_close_leaves_no_task_running(closed_port_url: str) -> None:
    """close() cancels the listing refresh and the probes: no task of the router outlives it."""
    async with serving("vllm") as (a,):
        router = Router([config(a.url), config(closed_port_url)], cooldown=30.0)
        await router.chat(HELLO)
        ours = {
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__.startswith("Pool.")  # type: ignore[union-attr]
        }
        assert router.background_tasks == len(ours) == 2  # the refresh, one probe
        await router.close()
    assert router.background_tasks == 0
    assert all(task.done() for task in ours)
    with pytest.raises(LLMUsageError, match="this Router is closed"):
        await router.chat(HELLO)


# --- failover counts and the retry budget under load (found in use) -------------------------------


async def test_failover_is_the_routers_count_not_the_endpoints_retries(no_waits: None) -> None:
    """Endpoints configured with max_retries=0 ("don't retry the same server") still fail
    over: the router's own max_retries, 2 by default, moves the request twice."""
    async with serving("vllm", "vllm", "vllm") as (a, b, c):
        a.script(Reply(status=503))
        b.script(Reply(status=503))
        router = Router(
            [config(s.url, max_retries=0) for s in (a, b, c)], strategy="failover", cooldown=0.2
        )
        async with router:
            result = await router.chat(HELLO)
    assert result.text == "echo: hello"
    assert (chats(a), chats(b), chats(c)) == (1, 1, 1)


async def test_an_endpoints_max_retries_bounds_its_own_retries(no_waits: None) -> None:
    """An endpoint's max_retries=0 means one call never goes back to it: with two such
    endpoints failing, a router allowed 5 retries makes 2 attempts in all."""
    async with serving("vllm", "vllm") as (a, b):
        for server in (a, b):
            server.script(*(Reply(status=429) for _ in range(10)))
        router = Router([config(s.url, max_retries=0) for s in (a, b)], max_retries=5)
        async with router:
            with pytest.raises(LLMRateLimitError):
                await router.chat(HELLO)
    assert chats(a) + chats(b) == 2


async def test_a_server_dying_under_long_streams_moves_every_request_it_had_not_started(
    no_waits: None,
) -> None:
    """Three servers, 300 long streams; one server holds its share before the first token,
    then dies. With the default budget every one of those requests moves to another server
    and completes: the budget counts the requests sent, not the (few) that have finished."""
    async with serving("vllm", "vllm", "vllm") as (dying, b, c):
        dying.script(*(Reply(text="never", delay_before_headers=30) for _ in range(150)))
        for server in (b, c):
            long = Reply(chunks=[f" w{i}" for i in range(20)], delay_between=0.05)
            server.script(*(long for _ in range(300)))
        async with Router([config(s.url) for s in (dying, b, c)], cooldown=5.0) as router:
            await router.preflight_check()

            async def stream() -> str:
                async with router.stream(HELLO) as answer:
                    return "".join([piece async for piece in answer.text()])

            tasks = [asyncio.create_task(stream()) for _ in range(300)]
            for _ in range(200):  # until every stream has been sent somewhere
                if sum(s.in_flight for s in router.stats()) == 300:
                    break
                await asyncio.sleep(0.01)
            held = router.stats()[0].in_flight
            await dying.stop()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert held >= 60  # the dying server had its share when it died
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert errors == []
    assert chats(b) + chats(c) == 300


async def test_an_outage_of_every_server_adds_at_most_the_budget(no_waits: None) -> None:
    """Every server failing: 300 requests, each allowed 2 retries, make at most 20 % more
    attempts plus the reserve (10 a second over the 10 s window), not three times as many."""
    async with serving("vllm", "vllm", "vllm") as servers:
        for server in servers:
            server.script(*(Reply(status=429) for _ in range(400)))
        async with Router([config(s.url) for s in servers]) as router:
            outcomes = await asyncio.gather(
                *(router.chat(HELLO) for _ in range(300)), return_exceptions=True
            )
    assert all(isinstance(o, LLMRateLimitError) for o in outcomes)
    attempts = sum(chats(s) for s in servers)
    assert 300 < attempts <= 300 + 0.2 * 300 + 10 * 10
