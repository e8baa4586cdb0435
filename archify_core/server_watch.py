"""When the server goes away mid-run: which errors mean that, how to say it, and waiting.

A rollout's workers all lose their connections at once when the server restarts
or fails over. Instead of each of them spending its retries against a server
that is not there, they wait for it together (ServerWatch): one probe at a
time, and the user hears once that the server was lost, once that it answers
again, or once that archify gave up on it.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import asyncpg

from .events import Event, Notice

T = TypeVar("T")

# What a lost (or unreachable) server raises, as opposed to an error of the SQL sent.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx, e.g. the connection was closed mid-operation
    asyncpg.AdminShutdownError,  # 57P01: terminated (pg_terminate_backend, a fast shutdown)
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.IdleSessionTimeoutError,  # 57P05
    asyncpg.InterfaceError,  # the connection is closed, or was released under us
    # the server closed an idle connection (a restart's 57P01) and asyncpg's protocol is
    # still busy with that error: the next query is refused before it is sent
    asyncpg.InternalClientError,
    OSError,  # ConnectionError, TimeoutError, a missing unix socket (ENOENT)...
)

# The server's own reason, kept in words: SQLSTATE -> what happened.
_SERVER_SAYS = {
    "57P01": "the server closed the connection",
    "57P02": "the server crashed and closed the connection",
    "57P03": "the server is not accepting connections",
    "57P05": "the server closed the idle connection",
}
_UNREACHABLE = {
    errno.ENOENT: "no server is listening on its socket",
    errno.ECONNREFUSED: "the connection was refused",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
}


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS)


def server_error(exc: BaseException) -> BaseException:
    """The server's own error behind a lost connection, when it sent one before closing
    (asyncpg raises "connection was closed in the middle of operation" with the server's
    57P01 as its cause); else `exc` itself."""
    cause = exc.__cause__
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError) and isinstance(
            cause, asyncpg.PostgresError):
        return cause
    return exc


def loss_reason(exc: BaseException) -> str:
    """What happened to the connection, in words a user understands, keeping the
    server's own message where it sent one."""
    exc = server_error(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc).strip()
    if sqlstate in _SERVER_SAYS:
        return f"{_SERVER_SAYS[sqlstate]} ({text}, SQLSTATE {sqlstate})"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | asyncpg.PostgresConnectionError):
        return "the server closed the connection"
    if isinstance(exc, TimeoutError):
        return "cannot reach the server: it did not answer in time"
    if isinstance(exc, OSError):
        why = _UNREACHABLE.get(exc.errno or 0) or (exc.strerror or text or type(exc).__name__)
        return f"cannot reach the server: {why}"
    return f"the connection to the server broke ({text or type(exc).__name__})"


class ServerWatch:
    """Whether one server answers, shared by every worker of a rollout.

    `wait(cause)` returns True as soon as the server answers a probe (at once for a
    single terminated backend, whose server is fine), or False once it has not
    answered for `patience` seconds; from then on it is given up for this rollout
    (`gave_up`), and the rollout starts no more schemas on it.
    """

    def __init__(self, probe: Callable[[], Awaitable[object]], where: str,
                 emit: Callable[[Event], None], patience: float) -> None:
        self._probe = probe
        self.where = where
        self._emit = emit
        self.patience = patience
        self.gave_up = False
        self._answered: anyio.Event | None = None  # set while one probe loop runs
        self.lost = False  # the last probe found no server (the user was told)
        self.outages = 0  # times the server was found gone (a retry can tell it waited)

    async def wait(self, cause: BaseException) -> bool:
        if self.gave_up:
            return False
        if self._answered is not None:  # another worker is probing: wait for its verdict
            await self._answered.wait()
            return not self.gave_up
        self._answered = anyio.Event()
        try:
            await self._probe_until_answered(cause)
        finally:
            self._answered.set()
            self._answered = None
        return not self.gave_up

    async def _probe_until_answered(self, cause: BaseException) -> None:
        started = time.monotonic()
        delay = 0.25
        while True:
            try:
                with anyio.fail_after(max(1.0, min(5.0, self.patience))):
                    await self._probe()
            except (*CONNECTION_ERRORS, asyncpg.TooManyConnectionsError) as exc:
                cause = exc
            else:
                if self.lost:
                    self.lost = False
                    self._emit(Notice(f"the server at {self.where} answers again after "
                                      f"{time.monotonic() - started:.1f} s; resuming"))
                return
            waited = time.monotonic() - started
            if not self.lost:
                self.lost = True
                self.outages += 1
                self._emit(Notice(f"lost the server at {self.where} ({loss_reason(cause)}); "
                                  f"retrying for up to {self.patience:.0f} s"))
            if waited >= self.patience:
                self.gave_up = True
                self._emit(Notice(f"gave up on the server at {self.where}: no answer for "
                                  f"{waited:.0f} s ({loss_reason(cause)}); schemas not yet "
                                  "migrated are left for a re-run"))
                return
            await anyio.sleep(min(delay, self.patience - waited))
            delay = min(delay * 2, 2.0)

    async def retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`, again after the server answers when it lost its connection; for reads,
        which are safe to repeat."""
        while True:
            try:
                return await read()
            except CONNECTION_ERRORS as exc:
                if not await self.wait(exc):
                    raise
