"""llmtap.batch: a JSONL file of requests through a client or a router, against loopback
servers; output in OpenAI's batch format whatever the dialect, resumable, nothing lost or
repeated."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmtap
from llmtap import BatchFileError, LLMClient, LLMConfig, Router
from llmtap.testing import RecordedRequest, Reply, TestServer, echo_reply, no_retry_waits

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with no_retry_waits():
        yield


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def chat_line(custom_id: str, text: str, model: str = "gpt-4o-mini", **body: Any) -> Any:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def answers(path: Path) -> dict[str, str]:
    """custom_id → the answer text of every output line."""
    return {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
        for line in read_lines(path)
    }


SHAPES = [
    pytest.param("openai", "openai", id="openai"),
    pytest.param("ollama", "ollama", id="ollama-native"),
    pytest.param("ollama", "openai", id="ollama-v1"),
    pytest.param("llamacpp", "openai", id="llama.cpp"),
    pytest.param("vllm", "openai", id="vllm"),
]


@pytest.mark.parametrize(("dialect", "api"), SHAPES)
async def test_an_openai_batch_file_runs_unchanged_on_every_server_shape(
    tmp_path: Path, dialect: str, api: str
) -> None:
    """A file made for OpenAI's batch endpoint (chat and embeddings lines, OpenAI model
    names) runs against each shape with --model; each output body validates as
    openai-python's ChatCompletion or CreateEmbeddingResponse."""
    from openai.types import CreateEmbeddingResponse
    from openai.types.chat import ChatCompletion

    source = write_lines(
        tmp_path / "in.jsonl",
        [
            chat_line("c-1", "first", temperature=0, max_tokens=50),
            chat_line("c-2", "second"),
            {
                "custom_id": "e-1",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": ["a", "b"]},
            },
        ],
    )
    async with TestServer(dialect=dialect) as server:
        server.script(Reply(text="one", usage=(5, 1)))
        model = server.models[0]
        config = LLMConfig(endpoint=server.url, api=api)  # type: ignore[arg-type]
        async with LLMClient(config) as client:
            report = await llmtap.batch.run(
                client, source, tmp_path / "out.jsonl", model=model, concurrency=1
            )
        sent = [request.json for request in server.chat_requests]
    assert (report.lines, report.succeeded, report.failures) == (3, 3, 0)
    lines = {line["custom_id"]: line for line in read_lines(tmp_path / "out.jsonl")}
    assert set(lines) == {"c-1", "c-2", "e-1"}
    for custom_id in ("c-1", "c-2"):
        line = lines[custom_id]
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_")
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.object == "chat.completion"
        assert completion.choices[0].finish_reason == "stop"
    assert lines["c-1"]["response"]["body"]["choices"][0]["message"]["content"] == "one"
    assert lines["c-1"]["response"]["body"]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,
    }
    assert lines["c-2"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: second"
    embeddings = CreateEmbeddingResponse.model_validate(lines["e-1"]["response"]["body"])
    assert [item.index for item in embeddings.data] == [0, 1]
    assert all(body["model"] == model for body in sent)  # --model over the file's
    first = sent[0]
    if api == "ollama":
        assert first["options"] == {"temperature": 0, "num_predict": 50}
    else:
        assert (first["temperature"], first["max_tokens"]) == (0, 50)
    assert not (tmp_path / "out.errors.jsonl").read_bytes()


async def test_the_short_form_with_defaults_and_line_numbers(tmp_path: Path) -> None:
    """Short lines ("prompt" or "messages"), no custom_id: their line numbers; the
    command-line defaults fill what a line does not set; blank lines are skipped."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"prompt": "hello"}\n\n{"messages": [{"role": "user", "content": "hi"}], '
        b'"temperature": 0.9}\n{"custom_id": "x", "prompt": "named"}\n'
    )
    async with TestServer(dialect="openai") as server:
        async with LLMClient(LLMConfig(endpoint=server.url, model="gpt-4o-mini")) as client:
            report = await llmtap.batch.run(
                client,
                source,
                tmp_path / "out.jsonl",
                params={"temperature": 0.1, "seed": 7},
                system="Be brief.",
                concurrency=1,
            )
        bodies = [request.json for request in server.chat_requests]
    assert report.succeeded == 3
    assert answers(tmp_path / "out.jsonl") == {
        "1": "echo: hello",
        "3": "echo: hi",
        "x": "echo: named",
    }
    assert [(b["temperature"], b["seed"]) for b in bodies] == [(0.1, 7), (0.9, 7), (0.1, 7)]
    assert all(b["messages"][0] == {"role": "system", "content": "Be brief."} for b in bodies)


async def test_bad_lines_are_error_lines_and_the_run_goes_on(tmp_path: Path) -> None:
    """A line that is not JSON, one with no request, an unsupported url and a 400 from the
    server: each an error line naming its line number, and the good lines answered."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"{not json\n"
        b'{"custom_id": "empty"}\n'
        + orjson.dumps({**chat_line("old", "x"), "url": "/v1/completions"})
        + b"\n"
        + orjson.dumps(chat_line("refused", "x"))
        + b"\n"
        + orjson.dumps(chat_line("fine", "ok"))
        + b"\n"
    )
    async with TestServer(dialect="openai") as server:
        server.fallback = lambda request: (
            Reply(status=400, error_message="bad request")
            if request.json["messages"][0]["content"] == "x"
            else echo_reply(request)
        )
        async with LLMClient(LLMConfig(endpoint=server.url, model="gpt-4o-mini")) as client:
            report = await llmtap.batch.run(client, source, tmp_path / "out.jsonl", concurrency=1)
    errors = {line["custom_id"]: line for line in read_lines(tmp_path / "out.errors.jsonl")}
    assert set(errors) == {"1", "empty", "old", "refused"}
    assert errors["1"]["error"]["line"] == 1
    assert errors["1"]["error"]["code"] == "invalid_line"
    assert "line 1 is not JSON" in errors["1"]["error"]["message"]
    assert errors["old"]["error"]["code"] == "invalid_line"
    assert "/v1/completions" in errors["old"]["error"]["message"]
    assert errors["refused"]["error"]["code"] == "400"
    assert errors["refused"]["response"] is None
    assert answers(tmp_path / "out.jsonl") == {"fine": "echo: ok"}
    assert dict(report.failed) == {"invalid_line": 3, "400": 1}
    assert report.stopped is None


async def test_duplicate_custom_ids_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Two lines with one custom_id (and a line without one that takes a taken number):
    BatchFileError naming the lines; the server saw nothing and no output was written."""
    source = write_lines(
        tmp_path / "in.jsonl",
        [chat_line("a", "1"), chat_line("b", "2"), chat_line("a", "3"), {"prompt": "p"},
         chat_line("4", "5")],
    )  # fmt: skip
    async with TestServer(dialect="openai") as server:
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            with pytest.raises(BatchFileError) as caught:
                await llmtap.batch.run(client, source, tmp_path / "out.jsonl")
        assert server.chat_requests == []
    message = str(caught.value)
    assert "'a' on lines 1, 3" in message
    assert "'4' on lines 4, 5" in message
    assert not (tmp_path / "out.jsonl").exists()


async def test_an_existing_output_is_refused_without_resume(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [chat_line("a", "1")])
    output = tmp_path / "out.jsonl"
    output.write_bytes(b'{"custom_id": "old"}\n')
    async with LLMClient(LLMConfig(endpoint="http://127.0.0.1:9", model="m")) as client:
        with pytest.raises(BatchFileError, match="resume"):
            await llmtap.batch.run(client, source, output)


async def test_resume_skips_what_is_written_and_repairs_a_cut_last_line(tmp_path: Path) -> None:
    """A run cut short left 2 answers, 1 error and half a line: resume sends only the lines
    not written, cuts the half line off, and each custom_id ends up exactly once."""
    source = write_lines(tmp_path / "in.jsonl", [chat_line(f"id-{n}", f"q{n}") for n in range(6)])
    async with TestServer(dialect="openai") as server:
        async with LLMClient(LLMConfig(endpoint=server.url, model="gpt-4o-mini")) as client:
            first = await llmtap.batch.run(
                client, source, tmp_path / "out.jsonl", concurrency=1, max_errors=1,
                params={}, on_progress=None,
            )  # fmt: skip
            assert first.succeeded == 6
            # make it look like a crash: keep 2 answers, 1 error, and half of a third answer
            output = tmp_path / "out.jsonl"
            lines = output.read_bytes().splitlines(keepends=True)
            output.write_bytes(b"".join(lines[:2]) + lines[2][:40])
            errors = tmp_path / "out.errors.jsonl"
            errors.write_bytes(lines[3].replace(b'"error":null', b'"error":{"code":"500"}'))
            server.requests.clear()
            report = await llmtap.batch.run(
                client, source, tmp_path / "out.jsonl", resume=True, concurrency=2
            )
        sent = sorted(request.json["messages"][0]["content"] for request in server.chat_requests)
    assert (report.skipped, report.succeeded) == (3, 3)
    assert sent == ["q2", "q4", "q5"]
    written = [line["custom_id"] for line in read_lines(tmp_path / "out.jsonl")]
    failed = [line["custom_id"] for line in read_lines(tmp_path / "out.errors.jsonl")]
    assert sorted(written + failed) == [f"id-{n}" for n in range(6)]


async def test_max_errors_stops_cleanly(tmp_path: Path) -> None:
    """With every request refused and max_errors=3: the run stops after the third error;
    the requests in flight then are still written; what was never sent is left for a
    resume."""
    source = write_lines(tmp_path / "in.jsonl", [chat_line(f"{n}", "x") for n in range(50)])
    async with TestServer(dialect="openai") as server:
        server.fallback = lambda request: Reply(status=422, delay_before_headers=0.02)
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            report = await llmtap.batch.run(
                client, source, tmp_path / "out.jsonl", concurrency=4, max_errors=3
            )
        sent = len(server.chat_requests)
    assert report.stopped == "max_errors"
    written = read_lines(tmp_path / "out.errors.jsonl")
    assert len(written) == sent  # everything sent was written
    assert 3 <= sent <= 3 + 4
    assert report.remaining == 50 - sent


async def test_a_stop_event_lets_what_is_in_flight_finish(tmp_path: Path) -> None:
    """stop set mid-run (Ctrl-C in the CLI): no new request goes out, those in flight are
    answered and written, the report says interrupted."""
    source = write_lines(tmp_path / "in.jsonl", [chat_line(f"{n}", f"q{n}") for n in range(40)])
    stop = asyncio.Event()

    def progress(report: llmtap.batch.BatchReport) -> None:
        if report.done == 5:
            stop.set()

    async with TestServer(dialect="openai") as server:
        server.fallback = lambda request: Reply(text="slow answer", delay_between=0.02)
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            report = await llmtap.batch.run(
                client, source, tmp_path / "out.jsonl", concurrency=4, stop=stop,
                on_progress=progress,
            )  # fmt: skip
        sent = len(server.chat_requests)
    assert report.stopped == "interrupted"
    assert len(read_lines(tmp_path / "out.jsonl")) == sent == report.done
    assert sent < 40


def faulty(rate: float, seed: int) -> Callable[[RecordedRequest], Reply]:
    """A server's replies: the echo, or with probability ``rate`` a 503, a reset before the
    headers, or a reset after the second chunk (each a third of the faults)."""
    chance = random.Random(seed)

    def reply(request: RecordedRequest) -> Reply:
        roll = chance.random()
        if roll >= rate:
            return echo_reply(request)
        fault = chance.randrange(3)
        if fault == 0:
            return Reply(status=503)
        if fault == 1:
            return Reply(reset_before_headers=True)
        text = echo_reply(request).text
        return Reply(text=text, reset_after=2)

    return reply


async def test_ten_thousand_lines_over_three_faulty_servers(tmp_path: Path) -> None:
    """10,000 lines, three servers each failing 5 % of requests (503s, resets before the
    headers, resets mid-stream): exactly 10,000 distinct custom_ids written, every answer
    whole (the echo of its own question), none in the errors file."""
    count = 10_000
    source = write_lines(
        tmp_path / "in.jsonl", [chat_line(f"row-{n}", f"question {n}") for n in range(count)]
    )
    async with TestServer() as a, TestServer() as b, TestServer() as c:
        for number, server in enumerate((a, b, c)):
            server.fallback = faulty(0.05, seed=number)
        endpoints = [{"endpoint": s.url, "model": "gpt-4o-mini"} for s in (a, b, c)]
        async with Router(endpoints, max_retries=5, cooldown=0.05) as router:
            report = await llmtap.batch.run(router, source, tmp_path / "out.jsonl", concurrency=64)
        served = [len(s.chat_requests) for s in (a, b, c)]
    written = answers(tmp_path / "out.jsonl")
    assert len(written) == count
    assert written == {f"row-{n}": f"echo: question {n}" for n in range(count)}
    assert read_lines(tmp_path / "out.errors.jsonl") == []
    assert (report.succeeded, report.failures, report.stopped) == (count, 0, None)
    # Every retry is an extra request; the other extra ones are requests a server reset on a
    # kept-alive connection before answering, which look like one it had closed while idle
    # and are sent again on a fresh connection (not a retry).
    assert 0 < report.retried <= sum(served) - count
    assert sum(report.endpoints.values()) == count


async def test_a_server_killed_mid_run_loses_no_line(tmp_path: Path) -> None:
    """Three servers, one stopped after 300 answers: the run finishes on the other two,
    every line answered once in the output, nothing in the errors file."""
    count = 2000
    source = write_lines(
        tmp_path / "in.jsonl", [chat_line(f"row-{n}", f"question {n}") for n in range(count)]
    )
    async with TestServer() as a, TestServer() as b, TestServer() as c:
        for server in (a, b, c):
            server.fallback = lambda request: Reply(
                text=echo_reply(request).text, delay_between=0.002
            )
        stopping: list[asyncio.Task[None]] = []

        def progress(report: llmtap.batch.BatchReport) -> None:
            if report.done == 300 and not stopping:
                stopping.append(asyncio.ensure_future(b.stop()))

        endpoints = [{"endpoint": s.url, "model": "gpt-4o-mini"} for s in (a, b, c)]
        async with Router(endpoints, max_retries=3) as router:
            report = await llmtap.batch.run(
                router, source, tmp_path / "out.jsonl", concurrency=32, on_progress=progress
            )
        await asyncio.gather(*stopping)
        after_stop = (len(a.chat_requests), len(c.chat_requests))
    assert answers(tmp_path / "out.jsonl") == {
        f"row-{n}": f"echo: question {n}" for n in range(count)
    }
    assert read_lines(tmp_path / "out.errors.jsonl") == []
    assert (report.succeeded, report.failures) == (count, 0)
    assert min(after_stop) > 300


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=st.lists(st.sampled_from([f"id{n}" for n in range(40)]) | st.none(), max_size=60))
def test_scan_refuses_exactly_the_duplicates(tmp_path: Path, ids: list[str | None]) -> None:
    """Any mix of ids, repeated or not, and lines without one: scan() counts the lines and
    refuses exactly when two lines share an id (a missing one is its line number)."""
    from llmtap._batch.lines import scan

    path = tmp_path / "in.jsonl"
    write_lines(path, [{"prompt": "p"} if i is None else {"custom_id": i, "prompt": "p"}
                       for i in ids])  # fmt: skip
    effective = [str(n) if i is None else i for n, i in enumerate(ids, 1)]
    repeated = list(dict.fromkeys(i for i in effective if effective.count(i) > 1))
    if repeated:
        with pytest.raises(BatchFileError) as caught:
            scan(path)
        assert f"{len(repeated)} custom_id(s) appear on more than one line" in str(caught.value)
        for custom_id in repeated[:10]:  # the message names the first ten
            lines = [n for n, i in enumerate(effective, 1) if i == custom_id][:5]
            assert f"{custom_id!r} on lines {', '.join(map(str, lines))}" in str(caught.value)
    else:
        assert scan(path).lines == len(ids)
