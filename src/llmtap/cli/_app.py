"""The ``llmtap`` command: chat, models, check, pull, bench, batch, serve-test, logs, cache.

Every command reads its settings with one precedence: flags (``--endpoint NAME``'s entry among
them) > environment (``LLMTAP_*``, then ``OPENAI_BASE_URL`` / ``OLLAMA_HOST`` /
``OPENAI_API_KEY``) > config file (``~/.config/llmtap/config.toml`` or ``$LLMTAP_CONFIG``) >
defaults (Ollama on localhost).

Exit codes: 0 ok, 1 server or model error, 2 usage error, 3 cannot connect, 4 model not found
(or none chosen among several), 5 credentials refused, 130 interrupted (Ctrl-C), 141 stdout
closed (``| head``), 143 terminated (SIGTERM); ``llmtap check`` adds 6: the model did not answer.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from llmtap.cli._common import (
    ApiKeyOption,
    CLIError,
    ConfigOption,
    Connection,
    DebugOption,
    EndpointOption,
    FirstTokenTimeoutOption,
    IdleTimeoutOption,
    ModelOption,
    run,
)

__all__ = ["app", "main"]

_EXIT_CODES = (
    "Exit codes: 0 ok, 1 server or model error, 2 usage error, 3 cannot connect, "
    "4 model not found (or none chosen among several), 5 credentials refused, "
    "130 interrupted (Ctrl-C), 141 stdout closed (| head), 143 terminated (SIGTERM)."
)


def _untyped_help(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # a flag takes no value: no "<bool>" beside it in the help
    return option


class _Group(TyperGroup):
    """The ``llmtap`` group; its -h/--help shows no type label."""

    def get_help_option(self, ctx: Any) -> Any:
        return _untyped_help(super().get_help_option(ctx))


class _Command(TyperCommand):
    """An ``llmtap`` command; its -h/--help shows no type label."""

    def get_help_option(self, ctx: Any) -> Any:
        return _untyped_help(super().get_help_option(ctx))


app = typer.Typer(
    name="llmtap",
    cls=_Group,
    help="Talk to a local LLM server (Ollama, llama.cpp, vLLM, LM Studio) or any "
    "OpenAI-compatible API.\n\nSettings come from flags, then the environment (LLMTAP_*, "
    "OPENAI_BASE_URL, OLLAMA_HOST, OPENAI_API_KEY), then ~/.config/llmtap/config.toml, then "
    "defaults (Ollama on localhost:11434).",
    epilog=_EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _examples(*lines: str) -> str:
    """An epilog with one example per line (rich help keeps blank-line-separated lines)."""
    return "Examples:\n\n" + "\n\n".join(lines)


def _version(value: bool) -> None:
    if value:
        from llmtap import __version__

        typer.echo(f"llmtap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            help="Show the version and exit.",
            callback=_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """llmtap: the async streaming client for local LLMs."""


@app.command(
    cls=_Command,
    epilog=_examples(
        'llmtap chat "Why is the sky blue?"',
        'llmtap chat "Summarize this" < notes.txt   (the prompt, then the file as its input)',
        "cat question.txt | llmtap chat",
        "llmtap chat --model qwen3 --system 'Be brief.'   (an interactive session)",
        'llmtap chat --tools my_tools.py "What is the weather in Paris?"',
        'llmtap chat --json "Hi" | jq .usage',
        'llmtap chat -c "And in French?"   (the latest logged conversation goes on)',
        "llmtap chat --cid 0196c1d2e3f4a5b6c7d8e9   (a session that goes on with that one)",
    ),
)
def chat(
    prompt: Annotated[
        str | None,
        typer.Argument(
            metavar="PROMPT",
            help="The question or instruction. With piped stdin too, both go in one message: "
            "PROMPT first, then the piped text between `<input>` and `</input>` lines. Without "
            "it: piped stdin is the question, else an interactive session starts.",
            show_default=False,
        ),
    ] = None,
    endpoint: EndpointOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    system: Annotated[
        str | None,
        typer.Option("--system", "-s", metavar="TEXT", help="A system prompt.", show_default=False),
    ] = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            metavar="MODULE",
            help="A module (importable name or .py file) whose @llmtap.tool functions the "
            "model may call. Repeatable.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", metavar="", help="Print the whole result as JSON (no streaming)."),
    ] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", metavar="", help="Print the text as it comes; no Markdown rendering."
        ),
    ] = False,
    hide_reasoning: Annotated[
        bool,
        typer.Option("--hide-reasoning", metavar="", help="Do not show the model's thinking."),
    ] = False,
    temperature: Annotated[
        float | None,
        typer.Option(metavar="FLOAT", help="Sampling temperature.", show_default=False, min=0.0),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Longest answer, in tokens; an answer cut there ends with a note on stderr.",
            show_default=False,
            min=1,
        ),
    ] = None,
    continue_latest: Annotated[
        bool,
        typer.Option(
            "--continue",
            "-c",
            metavar="",
            help="Continue the latest logged conversation: its messages are sent again, byte "
            "for byte as they were, then PROMPT (or the session's questions). Its model too, "
            "unless --model.",
            rich_help_panel="Log and cache",
        ),
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option(
            "--cid",
            metavar="ID",
            help="Continue the logged conversation ID, as -c does (`llmtap logs` shows the ids).",
            show_default=False,
            rich_help_panel="Log and cache",
        ),
    ] = None,
    log: Annotated[
        bool | None,
        typer.Option(
            "--log/--no-log",
            metavar="",
            help="Log this chat, or not. Default: logged, to $XDG_DATA_HOME/llmtap/logs.db "
            "(~/.local/share/llmtap/logs.db), or LLMTAP_LOG_DB / the config file's log_db; "
            "LLMTAP_LOG=0 or `llmtap logs off` turn it off.",
            show_default=False,
            rich_help_panel="Log and cache",
        ),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="DIALECT",
            help="How to talk to the server: openai (chat completions, the default), ollama "
            "(Ollama's native /api/chat), auto (ollama's when the server is Ollama) or "
            "responses (OpenAI's Responses API, /v1/responses). Default: LLMTAP_API or the "
            "config file's api.",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        bool | None,
        typer.Option(
            "--cache/--no-cache",
            metavar="",
            help="Answer a repeated deterministic request (--temperature 0) from the response "
            "cache, or not. Default: LLMTAP_CACHE or the config file's cache, else not "
            "(`llmtap cache info` shows it).",
            show_default=False,
            rich_help_panel="Log and cache",
        ),
    ] = None,
    idle_timeout: IdleTimeoutOption = None,
    first_token_timeout: FirstTokenTimeoutOption = None,
    debug: DebugOption = False,
) -> None:
    """Stream an answer to PROMPT, or chat interactively.

    With PROMPT and piped stdin, one message is sent: PROMPT first (the instruction), then
    a blank line and the piped text between an `<input>` line and an `</input>` line (its
    material). Without PROMPT, piped stdin is the question; with neither, a session starts.

    In a session: /model NAME, /system TEXT, /reset, /save FILE (it never overwrites; /save!
    FILE does), /exit; Ctrl-C stops the answer being written, not the session. Reasoning
    shows dimmed; tool calls show as they happen. When stdout is not a terminal, the answer
    is written as plain text, byte for byte (reasoning goes to stderr); on a terminal,
    control sequences in the model's text are removed.

    Every chat is logged (`llmtap logs` shows them) unless --no-log, LLMTAP_LOG=0 or
    `llmtap logs off`; -c and --cid read the log either way.
    """

    def body() -> int:
        from llmtap.cli._chat import ChatOptions, interactive, load_tools, one_shot, read_prompt
        from llmtap.cli._logs import continued, with_log

        if continue_latest and cid is not None:
            raise CLIError("-c continues the latest conversation, --cid ID another: give one")
        if system is not None and (continue_latest or cid is not None):
            raise CLIError(
                "--system cannot change a conversation that goes on (-c, --cid): it keeps "
                "the system prompt it had"
            )
        settings = Connection(endpoint, model, api_key, config).load(
            temperature=temperature,
            max_tokens=max_tokens,
            idle_timeout=idle_timeout,
            first_token_timeout=first_token_timeout,
            api=api,
        )
        if cache is not None:
            switched = (settings.cache or True) if cache else False
            settings = settings.model_copy(update={"cache": switched})
        options = ChatOptions(
            system=system,
            tools=load_tools(tools or []),
            as_json=as_json,
            markdown=not raw,
            reasoning=not hide_reasoning,
        )
        if continue_latest or cid is not None:
            found = continued(settings, cid)
            options.conversation, options.history = found.conversation, found.messages
            if model is None and found.model is not None:
                settings = settings.model_copy(update={"model": found.model})
        settings = with_log(settings, log, default=True)
        text = read_prompt(prompt, stdin_is_terminal=sys.stdin.isatty())
        if text is None:
            if as_json:
                raise CLIError('--json needs a prompt: llmtap chat --json "..."')
            return interactive(settings, options)
        return asyncio.run(one_shot(settings, text, options))

    run(body, debug=debug, traced=True)


@app.command(
    cls=_Command,
    epilog=_examples(
        "llmtap models",
        "llmtap models --json | jq '.[] | select(.loaded) | .name'",
        "llmtap models --endpoint http://localhost:8080   (llama.cpp)",
    ),
)
def models(
    endpoint: EndpointOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            metavar="",
            help="Print a JSON list of objects (name, size, loaded, ...).",
        ),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """List the server's models: size, parameters, quantization, modified, loaded now.

    Ollama tells all of these; OpenAI-compatible servers (/v1/models) tell fewer, and only
    the columns some model has are shown.
    """

    def body() -> int:
        from llmtap.cli._models_cmd import models_command

        settings = Connection(endpoint, model, api_key, config).load()
        return asyncio.run(models_command(settings, as_json=as_json))

    run(body, debug=debug)


@app.command(
    cls=_Command,
    epilog=_examples(
        "llmtap check",
        "llmtap check --model qwen3 --endpoint http://gpu-box:11434",
        "llmtap check --json",
    )
    + "\n\nExit codes: 0 all steps passed, 3 not reachable, 1 no LLM API there (or it is "
    "loading), 5 credentials refused, 4 model missing (or none chosen), 6 the model did not "
    "answer, 130 interrupted (Ctrl-C), 141 stdout closed, 143 terminated (SIGTERM).",
)
def check(
    endpoint: EndpointOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the steps as JSON.")
    ] = False,
    idle_timeout: IdleTimeoutOption = None,
    first_token_timeout: FirstTokenTimeoutOption = None,
    debug: DebugOption = False,
) -> None:
    """Diagnose the connection step by step, with the fix for each failure.

    Steps: reachable, server kind and version, auth, model present, model loads and answers
    one token, time to first token. The exit code names the step that failed.
    """

    def body() -> int:
        from llmtap.cli._check import check_command

        settings = Connection(endpoint, model, api_key, config).load(
            idle_timeout=idle_timeout, first_token_timeout=first_token_timeout
        )
        return asyncio.run(check_command(settings, as_json=as_json))

    run(body, debug=debug)


@app.command(
    cls=_Command,
    epilog=_examples(
        "llmtap pull llama3.2",
        "llmtap pull qwen3:8b --endpoint http://gpu-box:11434",
    ),
)
def pull(
    model_name: Annotated[
        str, typer.Argument(metavar="MODEL", help="The model to download, such as qwen3:8b.")
    ],
    endpoint: EndpointOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    idle_timeout: IdleTimeoutOption = None,
    first_token_timeout: FirstTokenTimeoutOption = None,
    debug: DebugOption = False,
) -> None:
    """Download a model into Ollama, with a progress bar per layer.

    Running it again after an interruption resumes: Ollama keeps what it has downloaded.
    Works with Ollama only.
    """

    def body() -> int:
        from llmtap.cli._pull import pull_command

        settings = Connection(endpoint, None, api_key, config).load(
            idle_timeout=idle_timeout, first_token_timeout=first_token_timeout
        )
        try:
            return asyncio.run(pull_command(settings, model_name))
        except KeyboardInterrupt:
            typer.echo(f"stopped; run `llmtap pull {model_name}` again to resume", err=True)
            raise

    run(body, debug=debug)


@app.command(
    cls=_Command,
    epilog=_examples(
        "llmtap bench",
        "llmtap bench --concurrency 1,4,16 --requests 5 --max-tokens 256",
        "llmtap bench --json > bench.json",
        "llmtap bench --plot bench.png   (or .svg, .pdf)",
    ),
)
def bench(
    endpoint: EndpointOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        str, typer.Option(metavar="N,N,...", help="Concurrent streams to try, comma-separated.")
    ] = "1,2,4,8",
    requests: Annotated[
        int,
        typer.Option(metavar="N", help="Requests each stream makes, one after another.", min=1),
    ] = 3,
    max_tokens: Annotated[
        int, typer.Option(metavar="N", help="Tokens asked for per answer.", min=1)
    ] = 128,
    prompt: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="The prompt (default: asks for a long story)."),
    ] = None,
    warmup: Annotated[
        bool,
        typer.Option(metavar="", help="Send one request first (not counted) to load the model."),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the results as JSON.")
    ] = False,
    plot_file: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw throughput and latency against concurrency into FILE: .png, .svg "
            "or .pdf, by its name (needs matplotlib). Checked before anything is measured; "
            "the table is printed in any case.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    idle_timeout: IdleTimeoutOption = None,
    first_token_timeout: FirstTokenTimeoutOption = None,
    debug: DebugOption = False,
) -> None:
    """Measure the server as a user meets it: time to first token (p50/p95), tokens per
    second, and aggregate throughput as concurrent streams grow.

    Its requests are neither logged nor answered from the response cache.
    """

    def body() -> int:
        from llmtap.cli._bench import DEFAULT_PROMPT, BenchPlan, bench_command, parse_levels

        plan = BenchPlan(
            levels=parse_levels(concurrency),
            requests=requests,
            max_tokens=max_tokens,
            prompt=prompt or DEFAULT_PROMPT,
            warmup=warmup,
        )
        settings = Connection(endpoint, model, api_key, config).load(
            idle_timeout=idle_timeout, first_token_timeout=first_token_timeout
        )
        # Measured requests are neither logged nor answered from the cache, whatever the
        # settings say: a cache hit is not the server's speed, and a log of them is noise.
        settings = settings.model_copy(update={"log_db": None, "cache": False})
        return asyncio.run(bench_command(settings, plan, as_json=as_json, plot_file=plot_file))

    run(body, debug=debug, traced=True)


@app.command(
    "serve-test",
    cls=_Command,
    epilog=_examples(
        "llmtap serve-test   (Ollama's API on localhost:11434)",
        "llmtap serve-test --dialect vllm --port 0 --models Qwen/Qwen3-8B",
        "llmtap serve-test --delay 0.05 --think --fail-rate 0.2",
    ),
)
def serve_test(
    dialect: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="The server to imitate: ollama, llamacpp, vllm or openai."
        ),
    ] = "ollama",
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Port (default: the real server's: 11434, 8080, 8000); 0 for a free one.",
            show_default=False,
            min=0,
            max=65535,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            metavar="A,B,...",
            help="Comma-separated model names (default: one per dialect).",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="Require this API key, as the real server would.",
            show_default=False,
        ),
    ] = None,
    fail_rate: Annotated[
        float,
        typer.Option(
            metavar="FRACTION", help="Fraction of chat requests answered 503.", min=0.0, max=1.0
        ),
    ] = 0.0,
    reset_after: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Drop the connection after N chunks of every answer.", min=0
        ),
    ] = None,
    delay: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Seconds between two chunks of an answer.", min=0.0),
    ] = 0.0,
    think: Annotated[
        bool, typer.Option(metavar="", help="Send reasoning before each answer.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Seed for --fail-rate (repeatable runs).")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Run llmtap's scripted test server, to try llmtap with no LLM at hand.

    Answers echo the last user message ("echo: ..."); listing, health and error routes answer
    as the imitated server does. Fault flags apply to every answer. Ctrl-C or SIGTERM stops
    the server, with exit code 0.
    """

    def body() -> int:
        from llmtap.cli._serve import Faults, serve_command

        dialects = ("ollama", "llamacpp", "vllm", "openai")
        if dialect not in dialects:
            raise CLIError(f"--dialect must be one of {', '.join(dialects)}, not {dialect!r}")
        names = [name.strip() for name in (models or "").split(",") if name.strip()]
        faults = Faults(
            fail_rate=fail_rate, reset_after=reset_after, delay=delay, think=think, seed=seed
        )
        return asyncio.run(
            serve_command(
                dialect,  # type: ignore[arg-type]
                host=host,
                port=port,
                models=names,
                api_key=api_key,
                faults=faults,
            )
        )

    run(body, debug=debug)


@app.command(
    cls=_Command,
    epilog=_examples(
        "llmtap batch tickets.jsonl -o answers.jsonl -m qwen3",
        "llmtap batch openai_batch.jsonl -o out.jsonl -m qwen3 --concurrency 16 --resume",
        "llmtap batch in.jsonl -o out.jsonl -e http://gpu1:11434 -e http://gpu2:11434",
    ),
)
def batch(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="JSONL requests: OpenAI's Batch API format (chat completions and "
            'embeddings), or {"messages": [...]} / {"prompt": "..."} lines.',
            show_default=False,
            dir_okay=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Where answers go, one JSON line each, as they complete (OpenAI's batch "
            "output format).",
            show_default=False,
            dir_okay=False,
        ),
    ],
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            metavar="FILE",
            help="Where failures go (default: OUTPUT with .errors before its suffix).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    endpoints: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            "-e",
            metavar="URL|NAME",
            help="A server (repeat it for several: they share the work as a Router). "
            "Default: LLMTAP_ENDPOINTS (comma-separated), else the usual one endpoint.",
            show_default=False,
            rich_help_panel="Connection",
        ),
    ] = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        int, typer.Option(metavar="N", help="Requests in flight at most.", min=1)
    ] = 64,
    max_rpm: Annotated[
        float | None,
        typer.Option(metavar="N", help="Requests started per minute at most.", min=0.001),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            metavar="",
            help="Continue a run: skip every custom_id already in the output or errors file "
            "(repairing a last line a crash cut short).",
        ),
    ] = False,
    max_errors: Annotated[
        int | None,
        typer.Option(metavar="N", help="Stop once N lines have failed.", min=1),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(metavar="T", help="Temperature for lines that set none.", show_default=False),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(metavar="N", help="Most tokens per answer, for lines that set none.", min=1),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="A system message for lines that have none."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the report as JSON at the end.")
    ] = False,
    log: Annotated[
        bool | None,
        typer.Option(
            "--log/--no-log",
            metavar="",
            help="Log every request to the conversation log (`llmtap logs`), or not. Default: "
            "not, unless LLMTAP_LOG=1, or LLMTAP_LOG_DB / the config file's log_db names a "
            "file (the answers are in OUTPUT already).",
            show_default=False,
        ),
    ] = None,
    idle_timeout: IdleTimeoutOption = None,
    first_token_timeout: FirstTokenTimeoutOption = None,
    debug: DebugOption = False,
) -> None:
    """Send every line of INPUT to the server(s) and write each answer as it completes.

    A progress bar on a terminal, a summary at the end. Ctrl-C stops sending, lets what is
    in flight finish and be written, and prints the command that resumes the run. Exit
    code 0 when every line was answered, 1 when some failed (see the errors file) or
    --max-errors stopped the run, 2 for an input that cannot be used (duplicate
    custom_ids are refused before anything is sent), 130 after Ctrl-C.
    """

    def body() -> int:
        from llmtap.cli._batch import BatchPlan, argv, batch_command, endpoints_from
        from llmtap.cli._logs import with_log

        params: dict[str, Any] = {}
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        configs = [
            with_log(
                Connection(endpoint, model, api_key, config).load(
                    idle_timeout=idle_timeout, first_token_timeout=first_token_timeout
                ),
                log,
                default=False,
            )
            for endpoint in endpoints_from(endpoints or [])
        ]
        plan = BatchPlan(
            input=input_file,
            output=output,
            errors=errors,
            concurrency=concurrency,
            max_rpm=max_rpm,
            resume=resume,
            max_errors=max_errors,
            model=model,
            params=params,
            system=system,
            as_json=as_json,
            argv=argv(),
        )
        return asyncio.run(batch_command(configs, plan))

    run(body, debug=debug, traced=True)


# --- llmtap logs ------------------------------------------------------------------------------

_LOGS_PANEL = "Which calls"

DatabaseOption = Annotated[
    Path | None,
    typer.Option(
        "--database",
        metavar="FILE",
        help="The log file to read. Default: LLMTAP_LOG_DB, the config file's log_db, else "
        "$XDG_DATA_HOME/llmtap/logs.db (~/.local/share/llmtap/logs.db).",
        show_default=False,
        dir_okay=False,
    ),
]


@dataclass(frozen=True, slots=True)
class _LogFile:
    """The ``llmtap logs`` options its subcommands share."""

    database: Path | None
    config: Path | None
    debug: bool

    def path(self) -> Path:
        """The log file: ``--database``, else the settings'."""
        from llmtap.cli._logs import log_file

        if self.database is not None:
            return self.database.expanduser()
        return log_file(Connection(config_file=self.config).load())


def _command_group(name: str, *, bare: bool) -> typer.Typer:
    """A command with subcommands (``llmtap logs path``), added to the app; ``bare``: the
    command alone runs too (``llmtap logs``), else it shows its help."""
    group = typer.Typer(
        name=name,
        cls=_Group,
        invoke_without_command=bare,
        no_args_is_help=not bare,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.add_typer(group)
    return group


logs_app = _command_group("logs", bare=True)


@logs_app.callback(
    cls=_Group,
    epilog=_examples(
        "llmtap logs   (the 10 latest calls)",
        "llmtap logs -n 50 -q 'sky blue'   (calls whose prompt or answer has both words)",
        "llmtap logs --cid 0196c1d2e3f4a5b6c7d8e9   (one conversation)",
        "llmtap logs --json -n 1 | jq '.[0].request.messages'",
        "llmtap logs path",
        "llmtap logs off   (and llmtap logs on)",
    ),
)
def logs(
    ctx: typer.Context,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            "-n",
            metavar="N",
            help="How many calls: the latest N.",
            min=1,
            rich_help_panel=_LOGS_PANEL,
        ),
    ] = 10,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            "-q",
            metavar="TEXT",
            help="Only calls whose prompt or answer holds every word of TEXT.",
            show_default=False,
            rich_help_panel=_LOGS_PANEL,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="Only calls to this model (as the server named it).",
            show_default=False,
            rich_help_panel=_LOGS_PANEL,
        ),
    ] = None,
    conversation: Annotated[
        str | None,
        typer.Option(
            "--conversation",
            "--cid",
            metavar="ID",
            help="Only the calls of this conversation.",
            show_default=False,
            rich_help_panel=_LOGS_PANEL,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            metavar="",
            help="Print one JSON array of the calls, in the same order, each with all it "
            "logged: the request as sent, text, reasoning, tool calls, usage, timings, error.",
        ),
    ] = False,
    database: DatabaseOption = None,
    config: ConfigOption = None,
    debug: DebugOption = False,
) -> None:
    """Show the logged chat calls: the latest N that match, oldest first (a conversation
    reads top to bottom).

    A table: TIME (local time zone), CONVERSATION (the id -c and --cid take), MODEL, tokens
    IN and OUT, and the first line of PROMPT and of ANSWER (an error shows as its type). On
    a terminal the table fits its width; in a pipe or a file each call is one whole line.

    Subcommands: `llmtap logs path` prints the log file's path; `llmtap logs off` stops
    `llmtap chat` from logging (`llmtap logs on` starts it again).
    """
    ctx.obj = _LogFile(database, config, debug)
    if ctx.invoked_subcommand is not None:
        return

    def body() -> int:
        from llmtap.cli._logs import LogQuery, logs_command

        request = LogQuery(count, query, model, conversation, as_json)
        return logs_command(ctx.obj.path(), request)

    run(body, debug=debug)


@logs_app.command("path", cls=_Command)
def logs_path(ctx: typer.Context) -> None:
    """Print the log file's path."""
    where: _LogFile = ctx.obj

    def body() -> int:
        typer.echo(str(where.path()))
        return 0

    run(body, debug=where.debug)


@logs_app.command("off", cls=_Command)
def logs_off(ctx: typer.Context) -> None:
    """Stop logging chats (--log still logs one); `llmtap logs on` starts again."""
    where: _LogFile = ctx.obj

    def body() -> int:
        from llmtap.cli._logs import logs_switch_command

        return logs_switch_command(where.path(), on=False)

    run(body, debug=where.debug)


@logs_app.command("on", cls=_Command)
def logs_on(ctx: typer.Context) -> None:
    """Log chats again (the default)."""
    where: _LogFile = ctx.obj

    def body() -> int:
        from llmtap.cli._logs import logs_switch_command

        return logs_switch_command(where.path(), on=True)

    run(body, debug=where.debug)


# --- llmtap cache -----------------------------------------------------------------------------

cache_app = _command_group("cache", bare=False)


@cache_app.callback(
    cls=_Group,
    epilog=_examples(
        "llmtap cache info",
        "llmtap cache info --json",
        "llmtap cache clear --older-than 7d",
        "LLMTAP_CACHE=1 llmtap chat --temperature 0 'Hi'   (a repeat is answered from it)",
    ),
)
def cache() -> None:
    """The response cache: what it holds, and emptying it.

    Its file: LLMTAP_CACHE or the config file's cache when they name one, else
    $XDG_CACHE_HOME/llmtap/cache.db (~/.cache/llmtap/cache.db).
    """


def _cache_file(config: Path | None) -> Path:
    from llmtap.cli._cache import cache_file

    return cache_file(Connection(config_file=config).load())


@cache_app.command("info", cls=_Command)
def cache_info(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", metavar="", help="Print a JSON object: path, answers, bytes, oldest, newest."
        ),
    ] = False,
    config: ConfigOption = None,
    debug: DebugOption = False,
) -> None:
    """Show the cache's file, how many answers it holds, their size, the oldest and the
    newest (local time)."""

    def body() -> int:
        from llmtap.cli._cache import cache_info_command

        return cache_info_command(_cache_file(config), as_json=as_json)

    run(body, debug=debug)


@cache_app.command("clear", cls=_Command)
def cache_clear(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete only the answers kept more than this long ago: seconds, or 90s, "
            "15m, 12h, 7d, 2w.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    debug: DebugOption = False,
) -> None:
    """Delete the cache's answers (all of them, or the old ones)."""

    def body() -> int:
        from llmtap.cli._cache import cache_clear_command

        return cache_clear_command(_cache_file(config), older_than=older_than)

    run(body, debug=debug)


def main() -> None:
    """Console-script entry point."""
    app()
