"""Writing to stdout and stderr so that every byte arrives, and a closed pipe ends quietly.

Python's own buffered stdout cannot be trusted here: after an event loop ran (uvloop's
io_uring), a blocking write to a pipe can return short, and the rest of the text is
dropped without an error (`archify status --json | slow-reader` received exactly
64 KiB of a 130 KiB document, exit 0). So the CLI writes with os.write itself, and
loops until the kernel took everything: short writes, EINTR and EAGAIN (a
descriptor another process made non-blocking) included.

A reader that goes away (`archify all --dry-run | head`) closes the pipe: the stream
then swallows what follows, without a BrokenPipeError, and the command still ends
with the exit code of its work.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import time

_FLUSH_BYTES = 64 * 1024
_FLUSH_SECONDS = 0.2


class Stream:
    """One of the process's standard outputs, by file descriptor, written whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False  # the reader went away
        self._pending: list[bytes] = []
        self._size = 0
        self._flushed = time.monotonic()

    @property
    def is_terminal(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    def write(self, text: str) -> None:
        """Queue `text`; it is written once enough has gathered, or a moment has passed
        (so a log read as it grows stays current), or at flush()."""
        if self.closed:
            return
        data = text.encode("utf-8", "replace")
        self._pending.append(data)
        self._size += len(data)
        if self._size >= _FLUSH_BYTES or time.monotonic() - self._flushed >= _FLUSH_SECONDS:
            self.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def lines(self, lines: list[str]) -> None:
        if lines:
            self.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self.closed:
            self._write_all(memoryview(data))

    def _write_all(self, data: memoryview) -> None:
        while data:
            try:
                written = os.write(self.fd, data)
            except InterruptedError:
                continue
            except BlockingIOError:  # non-blocking descriptor, full pipe: wait until it drains
                select.select([], [self.fd], [])
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
                    self._reader_gone()
                    return
                raise
            data = data[written:]

    def _reader_gone(self) -> None:
        """Nothing more goes out; Python's own stream on this descriptor must not complain
        about the closed pipe at exit either."""
        self.closed = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.fd)
            os.close(devnull)
        except OSError:
            pass


stdout = Stream(1)
stderr = Stream(2)


def flush_all() -> None:
    for stream in (stdout, stderr):
        stream.flush()


def error(message: str) -> None:
    """`archify: error: ...` on stderr, at once."""
    stderr.line(f"archify: error: {message}")
    flush_all()


def exit_with(code: int) -> None:
    """Everything written, then exit with `code` (the work's, even when stdout's reader
    went away early)."""
    flush_all()
    sys.exit(code)


class OneLineHandler(logging.Handler):
    """Log records (a plugin that raised, asyncpg's warnings) as one line each on stderr:
    the exception's type and message, never its traceback, unless ARCHIFY_DEBUG is set."""

    def __init__(self, debug: bool) -> None:
        super().__init__(logging.DEBUG if debug else logging.WARNING)
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f": {type(exc).__name__}: {exc}"
                if self.debug:
                    text += "\n" + logging.Formatter().formatException(record.exc_info)
            level = record.levelname.lower()
            stderr.line(f"archify: {level}: {text}")
            stderr.flush()
        except Exception:  # logging must never be what breaks a run
            self.handleError(record)


def route_logging() -> None:
    """Send every library's log records through OneLineHandler (from the CLI only: an
    application that uses the library keeps its own logging)."""
    debug = bool(os.environ.get("ARCHIFY_DEBUG"))
    root = logging.getLogger()
    root.handlers[:] = [OneLineHandler(debug)]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
