"""``llmtap chat``: stream an answer from the default endpoint (or the one given)."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from llmtap import LLMClient, LLMConfig, LLMConnectionError, LLMError, LLMUsageError, Message

__all__ = ["app", "main"]

app = typer.Typer(
    name="llmtap",
    help="Talk to a local LLM server (Ollama, llama.cpp, vLLM, LM Studio) or any "
    "OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=True,
)

EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_CONNECT, EXIT_NO_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


@app.callback()
def _root() -> None:
    """llmtap: the async streaming client for local LLMs."""


@app.command()
def chat(
    prompt: Annotated[
        str | None, typer.Argument(help="The question; read from stdin if omitted.")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Server URL (default: Ollama).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key (or LLMTAP_API_KEY).", show_default=False)
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
) -> None:
    """Stream the answer to PROMPT to the terminal.

    Example: llmtap chat "Why is the sky blue?" --model qwen3
    """
    if prompt is None:
        if sys.stdin.isatty():
            typer.echo('Give a prompt: llmtap chat "..." (or pipe one in).', err=True)
            raise typer.Exit(EXIT_USAGE)
        prompt = sys.stdin.read()
    overrides: dict[str, object] = {}
    if endpoint is not None:
        overrides["endpoint"] = endpoint
    if model is not None:
        overrides["model"] = model
    if api_key is not None:
        overrides["api_key"] = api_key
    try:
        config = LLMConfig(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    messages = [Message.system(system)] if system else []
    messages.append(Message.user(prompt))
    try:
        code = asyncio.run(_chat(config, messages))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


async def _chat(config: LLMConfig, messages: list[Message]) -> int:
    out = sys.stdout
    try:
        async with LLMClient(config) as client:
            await client.preflight_check()
            async for chunk in client.stream_chat_with_retry(messages):
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") if choice.get("index", 0) == 0 else None
                    if delta and (content := delta.get("content")):
                        out.write(content)
                        out.flush()
    except LLMUsageError as exc:
        typer.echo(f"\nerror: {exc}", err=True)
        return EXIT_USAGE
    except LLMConnectionError as exc:
        typer.echo(f"\nerror: {exc}", err=True)
        return EXIT_CONNECT
    except LLMError as exc:
        typer.echo(f"\nerror: {exc}", err=True)
        status = getattr(exc, "status_code", None)
        return EXIT_NO_MODEL if status == 404 else EXIT_SERVER
    out.write("\n")
    return EXIT_OK


def main() -> None:
    """Console-script entry point."""
    app()
