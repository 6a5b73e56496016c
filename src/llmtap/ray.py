"""Bulk jobs on more than one machine: a Ray Data processor that asks an llmtap ``Router``.

Install the extra (``pip install 'llmtap[ray]'``: Ray Data, with NumPy and PyArrow) and map a
dataset through :class:`ChatProcessor` with a pool of actors; each actor holds one
:class:`~llmtap.Router` over your servers and keeps it across batches::

    import ray
    from llmtap.ray import ChatProcessor

    ray.init()  # a laptop; on a cluster: ray.init(address="ray://head:10001")
    ds = ray.data.read_parquet("questions.parquet")  # a "prompt" or a "messages" column
    ds = ds.map_batches(
        ChatProcessor,
        fn_constructor_kwargs={
            "endpoints": ["http://gpu1:11434", "http://gpu2:11434"],
            "model": "qwen3",
            "concurrency": 16,  # requests in flight per actor
            "temperature": 0.2,  # any other keyword goes into every request
        },
        compute=ray.data.ActorPoolStrategy(size=4),  # 4 actors (or concurrency=4)
        num_cpus=0.25,  # an actor mostly waits for the servers
        batch_size=64,
    )
    ds.write_parquet("answers")

Ray gives each actor a whole CPU unless told otherwise, and reading and writing files need
CPUs too: with as many actors as CPUs, a job that reads files never starts. An actor spends
its time waiting for answers, so a fraction of a CPU (``num_cpus=0.25``) is enough.

Each row needs a ``messages`` column (a list of ``{"role", "content"}`` mappings, as in
OpenAI's chat API) or a ``prompt`` column (a string, sent as one user message; used where
``messages`` is null). It keeps its columns and gains:

=====================  ===========  ==========================================================
column                 Arrow type   value
=====================  ===========  ==========================================================
``text``               string       the answer (null when the row failed)
``reasoning``          string       the model's thinking, ``""`` if none (null on failure)
``finish_reason``      string       ``"stop"``, ``"length"``, ... (null if the server never
                                    said, or on failure)
``prompt_tokens``      int64        as the server counted them (null when unknown)
``completion_tokens``  int64        as the server counted them, else the chunks counted
                                    (null when unknown)
``error``              string       null for an answered row; else ``"<ErrorClass>:
                                    <message>"`` (``"LLMTimeoutError: ..."``)
=====================  ===========  ==========================================================

A row that fails is an ``error`` value, never a failed job: filter the failures out, or
run them again, afterwards (``ds.filter(lambda row: row["error"] is not None)``). Every
batch comes back as a ``pyarrow.Table`` whose new columns have the types above even where a
whole batch is null in one of them, so every Parquet file a job writes has the same schema
(Ray would otherwise store an all-null column as Arrow's ``null`` type, which pyarrow and
pandas cannot read together with the other files). Object columns that Ray hands over as
NumPy arrays of Python objects (``messages``: arrays of dicts) go back as plain lists, so
they are written as Arrow lists of structs, not as pickled objects.

What it does that Ray's own HTTP processor cannot: answers are streamed, so each endpoint's
deadlines apply per chunk (a server that stalls mid-answer fails in seconds, not at a
whole-request timeout) and a request that fails before any output (a server down, reset,
overloaded) moves at once to another server of the router, as a fresh request. Calls are
spread over the servers by the router's ``least_busy`` strategy, and a server that fails
is left out until it answers again.

``endpoints=None`` reads ``LLMTAP_ENDPOINTS`` (comma-separated URLs) in each actor: on a
cluster, pass it to the workers with ``runtime_env={"env_vars": {...}}`` in ``ray.init``.
Other ``LLMTAP_*`` variables fill each endpoint's other settings, as for any ``LLMConfig``.

``import llmtap`` alone never imports Ray, NumPy or PyArrow; this module imports Ray itself
only to turn a NumPy or pandas batch into Arrow.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

import numpy as np

# PyArrow ships no type information (and a machine without the extra has no PyArrow).
import pyarrow as pa  # type: ignore[import-untyped, import-not-found, unused-ignore]

from llmtap._config import LLMConfig, endpoints_from_env
from llmtap._errors import LLMError, LLMUsageError
from llmtap._router import Router

__all__ = ["ChatProcessor"]

#: The columns a processed batch gains, with their Arrow types.
_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("text", pa.string()),
    ("reasoning", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("error", pa.string()),
)


class _Answer(NamedTuple):
    """One row's new values, in the order of ``_COLUMNS``."""

    text: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


def _plain(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars turned into Python lists and scalars, at any
    depth (Ray hands a list of dicts over as an object array of dicts)."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _missing(value: Any) -> bool:
    """Whether a cell holds no value (``None``, or the NaN pandas puts in object columns)."""
    return value is None or (isinstance(value, float) and value != value)


def _request(messages: Any, prompt: Any) -> list[Any] | str:
    """A row's messages, or why it has none (an error value)."""
    if not _missing(messages):
        messages = _plain(messages)
        if isinstance(messages, list) and messages:
            return messages
        return (
            "ValueError: the row's 'messages' must be a non-empty list of "
            f"{{'role', 'content'}} mappings, not {type(messages).__name__} {messages!r:.200}"
        )
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not _missing(prompt):
        return f"ValueError: the row's 'prompt' must be a string, not {type(prompt).__name__}"
    return (
        "ValueError: the row has no 'messages' (a list of chat messages) and no 'prompt' "
        "(a string) to send"
    )


def _error(exc: BaseException) -> str:
    """The ``error`` value of a failed row: ``"<ErrorClass>: <message>"``."""
    message = exc.message if isinstance(exc, LLMError) else str(exc)
    return f"{type(exc).__name__}: {message}"


def _object_column(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """An object column whose cells are object arrays, as plain Python lists (so that Arrow
    stores them as lists, not as pickled objects); any other column as it is."""
    if values.dtype != object or not any(
        isinstance(cell, np.ndarray) and cell.dtype == object for cell in values
    ):
        return values
    plain = np.empty(len(values), dtype=object)
    plain[:] = [_plain(cell) for cell in values]
    return plain


def _arrow(columns: dict[str, np.ndarray[Any, Any]]) -> Any:
    """A NumPy batch as an Arrow table, converted as Ray converts it (tensor columns
    included)."""
    block_accessor = importlib.import_module("ray.data.block").BlockAccessor
    block = block_accessor.batch_to_block({k: _object_column(v) for k, v in columns.items()})
    if not isinstance(block, pa.Table):  # Ray fell back to a pandas block
        block = block_accessor.for_block(block).to_arrow()
    return block


class ChatProcessor:
    """A Ray Data callable class that answers each row's chat with an llmtap ``Router``.

    Pass the class (not an instance) to ``Dataset.map_batches`` with an actor pool; Ray
    makes one per actor with ``fn_constructor_kwargs``. Each one runs an event loop in a
    thread of its own and one router on it, for all the batches the actor is given. See
    the module's docstring for the columns it reads and adds.

    Args:
        endpoints: The servers: URLs, mappings of ``LLMConfig`` fields (plus ``name``,
            ``weight``, ``max_concurrency``) or ``LLMConfig`` objects, as for ``Router``.
            ``None``: the comma-separated URLs in ``LLMTAP_ENDPOINTS``, as the actor sees it.
        model: The model of every request (default: each endpoint's own).
        concurrency: Most requests one actor has in flight at once, over all its batches.
        max_retries: Attempts after the first for one row, across the servers (the router's
            failover count).
        **params: Request parameters for every row (``temperature``, ``max_tokens``,
            ``top_p``, ``seed``, ``think``, ...), as for ``Router.chat``.

    Raises:
        ValueError: ``concurrency`` < 1, ``LLMTAP_ENDPOINTS`` unset with ``endpoints=None``,
            or a router argument out of range (the message names it).

    Example:
        >>> import ray
        >>> ds = ray.data.from_items([{"prompt": "Why is the sky blue?"}])
        >>> ds = ds.map_batches(
        ...     ChatProcessor,
        ...     fn_constructor_kwargs={"endpoints": ["http://gpu1:11434"], "model": "qwen3"},
        ...     compute=ray.data.ActorPoolStrategy(size=2),
        ... )
        >>> ds.take(1)[0]["text"]
        'Rayleigh scattering: blue light scatters the most.'
    """

    def __init__(
        self,
        endpoints: Sequence[str | Mapping[str, Any] | LLMConfig] | None = None,
        *,
        model: str | None = None,
        concurrency: int = 16,
        max_retries: int = 3,
        **params: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency!r}")
        if endpoints is None:
            endpoints = endpoints_from_env()
            if not endpoints:
                raise ValueError(
                    "LLMTAP_ENDPOINTS is not set in this Ray worker: pass endpoints=[...], or "
                    "set it to the servers' URLs, comma-separated, on every worker "
                    '(ray.init(runtime_env={"env_vars": {"LLMTAP_ENDPOINTS": "..."}}))'
                )
        self._params = params
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmtap-ray", daemon=True
        )
        self._thread.start()
        # The router and the limit belong to the loop: make them on it (a bad argument
        # fails here, when the actor starts, not at the first batch).
        try:
            opened: tuple[Router, asyncio.Semaphore] = self._run(
                self._open(list(endpoints), model, max_retries, concurrency)
            )
        except BaseException:
            self._stop_loop()
            raise
        self._router, self._slots = opened

    async def _open(
        self,
        endpoints: list[str | Mapping[str, Any] | LLMConfig],
        model: str | None,
        max_retries: int,
        concurrency: int,
    ) -> tuple[Router, asyncio.Semaphore]:
        return Router(endpoints, model=model, max_retries=max_retries), asyncio.Semaphore(
            concurrency
        )

    def _run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the actor's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    @property
    def router(self) -> Router:
        """The actor's router (its ``stats()`` tell how the servers fared)."""
        return self._router

    def __call__(self, batch: Any) -> Any:
        """Answer every row of ``batch``, ``concurrency`` at a time.

        Args:
            batch: A batch in any of Ray's formats: ``dict[str, numpy.ndarray]`` (the
                default), a ``pandas.DataFrame`` or a ``pyarrow.Table``.

        Returns:
            A ``pyarrow.Table``: the batch's columns, then the new ones (which replace
            columns of the same names).

        Raises:
            LLMUsageError: The processor was closed.
        """
        with self._lock:
            if self._closed:
                raise LLMUsageError("this ChatProcessor is closed; make a new one")
        table, requests = self._read(batch)
        answers: list[_Answer] = self._run(self._answer_all(requests))
        for index, (name, kind) in enumerate(_COLUMNS):
            column = pa.array([answer[index] for answer in answers], type=kind)
            if name in table.column_names:
                table = table.set_field(table.column_names.index(name), name, column)
            else:
                table = table.append_column(name, column)
        return table

    def _read(self, batch: Any) -> tuple[Any, list[list[Any] | str]]:
        """The batch as an Arrow table, and each row's messages (or why it has none)."""
        if isinstance(batch, pa.Table):
            table = batch
            columns = {
                name: table.column(name).to_pylist()
                for name in ("messages", "prompt")
                if name in table.column_names
            }
        else:
            if not isinstance(batch, Mapping):  # a pandas DataFrame
                batch = {str(name): batch[name].to_numpy() for name in batch.columns}
            table = _arrow(dict(batch))
            columns = {name: list(batch[name]) for name in ("messages", "prompt") if name in batch}
        rows = table.num_rows
        messages = columns.get("messages", [None] * rows)
        prompts = columns.get("prompt", [None] * rows)
        return table, [_request(m, p) for m, p in zip(messages, prompts, strict=True)]

    async def _answer_all(self, requests: list[list[Any] | str]) -> list[_Answer]:
        return list(await asyncio.gather(*(self._answer(request) for request in requests)))

    async def _answer(self, request: list[Any] | str) -> _Answer:
        if isinstance(request, str):
            return _Answer(error=request)
        async with self._slots:
            try:
                result = await self._router.chat(request, **self._params)
            except Exception as exc:  # any failure is the row's, never the job's
                return _Answer(error=_error(exc))
        return _Answer(
            text=result.text,
            reasoning=result.reasoning,
            finish_reason=result.finish_reason,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
        )

    def close(self) -> None:
        """Close the router (its connections) and stop the actor's loop thread. Calling it
        again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:  # the garbage collector, on the loop
            self._closing = self._loop.create_task(self._shut_down())
            return
        try:
            if self._loop.is_running():
                self._run(self._router.close())
        finally:
            self._stop_loop()

    async def _shut_down(self) -> None:
        try:
            await self._router.close()
        finally:
            self._loop.stop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __del__(self) -> None:
        # An actor that ends without close(): release the connections and the thread.
        if getattr(self, "_router", None) is not None and not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):  # the interpreter may be shutting down
                self.close()
