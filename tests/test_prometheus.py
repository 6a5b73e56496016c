"""llmtap.prometheus: after a run with injected faults, the registry's text exposition, read
back with prometheus-client's own parser, holds the right counts."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmtap import LLMClient, LLMConfig, LLMResponseError, Message, Router
from llmtap.testing import Reply, TestServer, no_retry_waits

HELLO = [Message.user("hello")]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _setup() -> Iterator[None]:
    if importlib.util.find_spec("prometheus_client") is None:
        reason = "the Prometheus tests need prometheus-client: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI runs them; they must not be skipped", pytrace=False)
        pytest.skip(reason)
    with no_retry_waits():
        yield


def scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry's exposition as a server would serve it, parsed back: each sample by
    its name and sorted labels."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_counts_after_a_run_with_injected_faults() -> None:
    """A client meets a 503 (retried), a 400 (raised), a stream its caller closes early and
    two clean answers: every counter and histogram count says so, nothing is left in flight."""
    from prometheus_client import CollectorRegistry

    import llmtap.prometheus

    registry = CollectorRegistry()
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(status=503),
            Reply(chunks=["a", "b", "c"], usage=(5, 3)),
            Reply(status=400),
            Reply(text="one two three four five six", delay_between=0.01),
            Reply(text="whole", usage=(5, 1)),
        )
        config = LLMConfig(
            endpoint=server.url, model="m", hooks=[llmtap.prometheus.hooks(registry)]
        )
        async with LLMClient(config) as client:
            await client.chat(HELLO)  # 503, then an answer: one retry
            with pytest.raises(LLMResponseError):
                await client.chat(HELLO)  # 400: not retried
            async with client.stream(HELLO) as stream:
                async for _event in stream:
                    break  # cancelled
            await client.chat(HELLO, stream=False)
        endpoint = server.url
    samples = scrape(registry)
    requests = "llmtap_requests_total"
    assert value(samples, requests, endpoint=endpoint, model="m", outcome="ok") == 2
    assert value(samples, requests, endpoint=endpoint, model="m", outcome="error") == 1
    assert value(samples, requests, endpoint=endpoint, model="m", outcome="cancelled") == 1
    assert value(samples, "llmtap_retries_total", endpoint=endpoint) == 1
    duration = "llmtap_request_duration_seconds_count"
    assert value(samples, duration, endpoint=endpoint, model="m") == 3  # not the cancelled one
    first_token = "llmtap_time_to_first_token_seconds_count"
    assert value(samples, first_token, endpoint=endpoint, model="m") == 1  # streamed, ended
    assert value(samples, "llmtap_output_tokens_total", endpoint=endpoint, model="m") == 4
    assert value(samples, "llmtap_in_flight", endpoint=endpoint) is None  # none now
    assert [key for key in samples if key[0] == "llmtap_endpoint_up"] == []  # no router


async def test_in_flight_counts_a_call_under_way() -> None:
    """While a stream is being read, llmtap_in_flight{endpoint} is 1; after, it is gone."""
    from prometheus_client import CollectorRegistry

    import llmtap.prometheus

    registry = CollectorRegistry()
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="one two three", delay_between=0.01))
        config = LLMConfig(
            endpoint=server.url,
            model="llama3.2",
            api="ollama",
            hooks=[llmtap.prometheus.hooks(registry)],
        )
        async with LLMClient(config) as client:
            async with client.stream(HELLO) as stream:
                async for _event in stream:
                    during = scrape(registry)
                    break
                await stream.result()
        after = scrape(registry)
        endpoint = server.url
    assert value(during, "llmtap_in_flight", endpoint=endpoint) == 1
    assert value(after, "llmtap_in_flight", endpoint=endpoint) is None
    ok = value(after, "llmtap_requests_total", endpoint=endpoint, model="llama3.2", outcome="ok")
    assert ok == 1


async def test_a_router_reports_its_endpoints_up_and_in_flight() -> None:
    """Through a Router whose first endpoint fails: the failover counts as a retry on that
    endpoint, the answer as ok on the other, and llmtap_endpoint_up says which is out."""
    from prometheus_client import CollectorRegistry

    import llmtap.prometheus

    registry = CollectorRegistry()
    metrics = llmtap.prometheus.hooks(registry)
    async with TestServer(dialect="openai") as bad, TestServer(dialect="openai") as good:
        bad.script(Reply(status=500))
        endpoints = [
            {"endpoint": bad.url, "model": "gpt-4o-mini", "name": "bad"},
            {"endpoint": good.url, "model": "gpt-4o-mini", "name": "good"},
        ]
        async with Router(endpoints, strategy="failover", hooks=[metrics], cooldown=60) as router:
            await router.chat(HELLO)
            samples = scrape(registry)
    assert value(samples, "llmtap_retries_total", endpoint="bad") == 1
    ok = value(samples, "llmtap_requests_total", endpoint="good", model="gpt-4o-mini", outcome="ok")
    assert ok == 1
    assert value(samples, "llmtap_endpoint_up", endpoint="bad") == 0
    assert value(samples, "llmtap_endpoint_up", endpoint="good") == 1
    assert value(samples, "llmtap_in_flight", endpoint="bad") == 0
    assert value(samples, "llmtap_in_flight", endpoint="good") == 0


async def test_hooks_for_one_registry_share_its_metrics() -> None:
    """Two hooks on one registry (two clients) add to the same counters, with no
    duplicate-metric error."""
    from prometheus_client import CollectorRegistry

    import llmtap.prometheus

    registry = CollectorRegistry()
    async with TestServer(dialect="openai") as server:
        clients = [
            LLMClient(
                LLMConfig(endpoint=server.url, model="m", hooks=[llmtap.prometheus.hooks(registry)])
            )
            for _ in range(2)
        ]
        await asyncio.gather(*(client.chat(HELLO) for client in clients))
        for client in clients:
            await client.close()
        endpoint = server.url
    samples = scrape(registry)
    assert value(samples, "llmtap_requests_total", endpoint=endpoint, model="m", outcome="ok") == 2


def test_import_llmtap_imports_no_prometheus_client() -> None:
    """import llmtap loads no prometheus_client; llmtap.prometheus does."""
    import subprocess
    import sys

    code = (
        "import sys, llmtap\n"
        "assert 'prometheus_client' not in sys.modules\n"
        "import llmtap.prometheus\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
