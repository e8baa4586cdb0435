"""A TCP proxy that adds a fixed delay to every byte between client and server.

The way to model a database on another machine when the kernel has no `netem`
qdisc (this benchmark's VM kernel lacks it: `tc qdisc add ... netem` answers
"Specified qdisc kind is unknown"). Every chunk from the client is held for the
requested added round-trip time before it is sent to the server (as `netem delay`
on one side of a link adds it to every round trip); replies pass straight through.
One queue keeps the order.
asyncio's timers wake with millisecond granularity (epoll), so the delay is
accurate for whole milliseconds. It runs in its own process so its CPU is not
charged to the tool being measured.

    python -m benchmarks.latency_proxy --port 0 --delay-ms 1 --target unix:/path/.s.PGSQL.5432
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward `reader` to `writer`, each chunk `delay` seconds after it arrived."""
    if not delay:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
        return
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = asyncio.Event()
    done = False

    async def send() -> None:
        while True:
            while not queue:
                if done:
                    return
                ready.clear()
                await ready.wait()
            due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.append((time.monotonic() + delay, data))
            ready.set()
    finally:
        done = True
        ready.set()
        try:
            await sender
        finally:
            writer.close()


async def _serve(target: str, delay: float, port: int) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if target.startswith("unix:"):
            s_reader, s_writer = await asyncio.open_unix_connection(target[5:])
        else:
            host, _, s_port = target.rpartition(":")
            s_reader, s_writer = await asyncio.open_connection(host, int(s_port))
        await asyncio.gather(_pump(c_reader, s_writer, delay), _pump(s_reader, c_writer, 0.0),
                             return_exceptions=True)

    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    print(srv.sockets[0].getsockname()[1], flush=True)  # the parent reads the chosen port
    async with srv:
        await srv.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="unix:PATH or HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="added round-trip time")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.target, args.delay_ms / 1000, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
