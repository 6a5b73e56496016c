"""The SQLite files of the conversation log and the response cache: opening one (WAL, its
schema brought up to date by its migrations), and the one background thread per file that
writes to it, so that the event loop never waits on the disk.

Everything here is the standard library's ``sqlite3``. A file is opened in WAL mode: readers
(``llmtap logs``, a cache lookup) never wait for the writer, and a process killed while
writing leaves the file readable, missing at most the transaction under way, which is one
batch of rows.
"""

from __future__ import annotations

import atexit
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmtap._errors import StoreError
from llmtap._log import get_logger

__all__ = ["Migrations", "Writer", "open_database", "writer_for"]

_log = get_logger()

#: The schema of a file, one entry per version: the statements that bring version ``n`` to
#: ``n + 1``. The file's ``PRAGMA user_version`` says how many have been applied.
Migrations = Sequence[Sequence[str]]

#: Most queued jobs one transaction takes.
_BATCH = 2000
#: Seconds the writer waits, once woken by a job, for more to come: a burst (a thousand
#: streams ending together) becomes one batch, and the writer's thread does not take the GIL
#: from the event loop while the loop is still handing it the burst.
_GATHER = 0.01


def open_database(path: Path, migrations: Migrations, *, what: str) -> sqlite3.Connection:
    """A connection to ``path`` (made, with its folder, when missing), in WAL mode, with every
    migration the file lacks applied, each in a transaction of its own.

    Args:
        path: The database file.
        migrations: The schema's versions (see :data:`Migrations`).
        what: What the file is, for error messages (``"conversation log"``).

    Raises:
        StoreError: The folder cannot be made, the file is not a SQLite database, or a newer
            llmtap wrote it (its schema version is above the ones known here).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(
            f"Cannot open the {what} at {path}: {exc}; choose a writable path", path=path
        ) from exc
    try:
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        _migrate(connection, migrations, path, what)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise StoreError(
            f"The {what} at {path} cannot be used: {exc}; move the file away (llmtap makes "
            "a new one) or choose another path",
            path=path,
        ) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection, migrations: Migrations, path: Path, what: str) -> None:
    """Apply the migrations the file lacks; refuse a file from a newer schema."""
    known = len(migrations)
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version == known:
        return
    connection.execute("BEGIN IMMEDIATE")  # another process may be migrating: one at a time
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > known:
            raise StoreError(
                f"The {what} at {path} has schema version {version}, newer than this llmtap "
                f"knows ({known}); upgrade llmtap, or move the file away",
                path=path,
            )
        for number in range(version, known):
            for statement in migrations[number]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {known}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


#: A job for the writer: a function given the connection and every argument queued for it
#: in a row (so that a batch of rows is one ``executemany``).
Job = Callable[[sqlite3.Connection, list[Any]], None]


class Writer:
    """The one thread that writes to a database file: jobs are queued from any thread
    (:meth:`put` never touches the disk) and written in batches, each batch one transaction:
    what was queued while the last one was being written, and in the 10 ms after the first
    job of a batch woke the thread.

    Args:
        path: The database file.
        migrations: Its schema (applied now, in the caller's thread, so that a bad path
            raises here).
        what: What the file is, for messages.

    Raises:
        StoreError: As :func:`open_database`.
    """

    def __init__(self, path: Path, migrations: Migrations, *, what: str) -> None:
        self.path = path
        self.what = what
        self._connection = open_database(path, migrations, what=what)
        self._queue: queue.SimpleQueue[tuple[Job | None, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"llmtap-{what.replace(' ', '-')}-writer", daemon=True
        )
        self._thread.start()

    def put(self, job: Job, argument: Any) -> None:
        """Queue ``job(connection, [argument, ...])`` for the next batch (no disk access)."""
        self._queue.put((job, argument))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued before this call is written; ``False`` if
        ``timeout`` seconds passed first."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put((None, done))
        return done.wait(timeout)

    def _run(self) -> None:
        take, take_now = self._queue.get, self._queue.get_nowait
        while True:
            batch = [take()]
            if batch[0][0] is not None:
                time.sleep(_GATHER)
            while len(batch) < _BATCH:
                try:
                    batch.append(take_now())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[tuple[Job | None, Any]]) -> None:
        """Write one batch in one transaction, then wake whoever waits for it."""
        waiting: list[threading.Event] = []
        groups: list[tuple[Job, list[Any]]] = []
        for job, argument in batch:
            if job is None:
                waiting.append(argument)
            elif groups and groups[-1][0] is job:
                groups[-1][1].append(argument)
            else:
                groups.append((job, [argument]))
        if groups:
            connection = self._connection
            try:
                connection.execute("BEGIN")
                for job, arguments in groups:
                    job(connection, arguments)
                connection.execute("COMMIT")
            except Exception as exc:  # nothing may stop the writer; the loss is logged
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                _log.error(
                    "llm_store_write_failed",
                    store=self.what,
                    path=str(self.path),
                    lost=sum(len(arguments) for _, arguments in groups),
                    error=f"{type(exc).__name__}: {exc}",
                )
        for event in waiting:
            event.set()


#: One writer per database file (and process: a forked child makes its own).
_writers: dict[tuple[int, Path], Writer] = {}
_writers_lock = threading.Lock()


def writer_for(path: Path, migrations: Migrations, *, what: str) -> Writer:
    """The process's writer of ``path`` (made on first use; every client logging to the
    same file shares it).

    Raises:
        StoreError: As :func:`open_database`.
    """
    path = path.expanduser().resolve()
    key = (os.getpid(), path)
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = Writer(path, migrations, what=what)
        return writer


@atexit.register
def _flush_all() -> None:
    """At exit, write what is still queued (the writer threads are daemons)."""
    pid = os.getpid()
    for (owner, _), writer in list(_writers.items()):
        if owner == pid:
            writer.flush(timeout=10.0)
