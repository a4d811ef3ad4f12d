"""The loop a system runs its asyncio actors on: parked on a lock while it watches no I/O, asyncio otherwise.

`actors._core.eventloop.ParkingEventLoop` waits for wake-ups on a lock while
its self-pipe is the only descriptor it watches, and in the real selector as
soon as anything else is registered. These tests hold it to what any asyncio
loop does (wake-ups from other threads, timers, sockets, servers,
subprocesses, signals) and to never losing a wake-up; the ones through
actors run in every mode, asking from threads and from other loops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors import Actor, ActorSystem
from actors._core.eventloop import ParkingEventLoop
from tests.core.actors_for_tests import WAIT, Recorder

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the system's own loop is the proactor on Windows")


@pytest.fixture
def loop_thread() -> Iterator[ParkingEventLoop]:
    """A `ParkingEventLoop` running forever on a thread of its own; stopped, joined and closed after."""
    loop = ParkingEventLoop()
    thread = threading.Thread(target=loop.run_forever, name="test-parking-loop")
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    loop.close()


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on `loop` (another thread's) and return its result, with a hang guard."""
    return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, WAIT), loop).result(WAIT)


def parkable(loop: ParkingEventLoop) -> bool:
    """Return whether `loop` waits for wake-ups on its lock (True) or in the real selector."""
    return loop._parking.parkable


def test_a_parked_loop_runs_call_soon_threadsafe_from_a_foreign_thread(loop_thread: ParkingEventLoop) -> None:
    ran = threading.Event()
    where: list[str] = []

    def callback() -> None:
        where.append(threading.current_thread().name)
        ran.set()

    assert on_loop(loop_thread, asyncio.sleep(0)) is None  # running, and parked between passes
    assert parkable(loop_thread)
    foreign = threading.Thread(target=loop_thread.call_soon_threadsafe, args=(callback,), name="test-foreign")
    foreign.start()
    foreign.join(WAIT)
    assert ran.wait(WAIT)
    assert where == ["test-parking-loop"]


def test_timers_fire_on_a_parked_loop() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        done = loop.create_future()
        loop.call_later(0.02, fired.append, "later")
        loop.call_later(0.03, done.set_result, None)
        await asyncio.sleep(0.01)
        fired.append("slept")
        await done
        return fired

    with asyncio.Runner(loop_factory=ParkingEventLoop) as runner:
        assert runner.run(asyncio.wait_for(main(), WAIT)) == ["slept", "later"]


def test_add_reader_on_a_socketpair_wakes_the_loop_and_parking_resumes_after_remove_reader(
    loop_thread: ParkingEventLoop,
) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    got: asyncio.Future[bytes] | None = None

    async def watch() -> None:
        nonlocal got
        got = asyncio.get_running_loop().create_future()

        def readable() -> None:
            assert got is not None
            if not got.done():
                got.set_result(ours.recv(100))

        asyncio.get_running_loop().add_reader(ours, readable)

    async def read() -> bytes:
        assert got is not None
        data = await got
        asyncio.get_running_loop().remove_reader(ours)
        return data

    with ours, theirs:
        on_loop(loop_thread, watch())
        assert not parkable(loop_thread)  # a user descriptor: the loop waits in epoll/kqueue
        theirs.sendall(b"hello")  # no wake-up but the socket's own readiness
        assert on_loop(loop_thread, read()) == b"hello"
        assert parkable(loop_thread)


def test_call_soon_threadsafe_wakes_a_loop_that_waits_in_the_selector_on_a_quiet_socket(
    loop_thread: ParkingEventLoop,
) -> None:
    ours, theirs = socket.socketpair()
    ran = threading.Event()

    async def watch() -> None:
        asyncio.get_running_loop().add_reader(ours, ours.recv, 100)

    async def unwatch() -> None:
        asyncio.get_running_loop().remove_reader(ours)

    with ours, theirs:
        on_loop(loop_thread, watch())
        assert not parkable(loop_thread)  # waits in epoll/kqueue, on a socket nobody writes to
        foreign = threading.Thread(target=loop_thread.call_soon_threadsafe, args=(ran.set,), name="test-foreign")
        foreign.start()
        foreign.join(WAIT)
        assert ran.wait(WAIT)
        on_loop(loop_thread, unwatch())


def test_a_server_and_a_client_on_the_loop_talk_over_tcp(loop_thread: ParkingEventLoop) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> bytes:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping\n")
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return line

    assert on_loop(loop_thread, main()) == b"ping\n"
    assert parkable(loop_thread)


def test_a_subprocess_runs_and_is_reaped_on_the_loop(loop_thread: ParkingEventLoop) -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('from the child')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out, await proc.wait()

    out, code = on_loop(loop_thread, main())
    assert (out.strip(), code) == (b"from the child", 0)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_signal_handler_runs_and_turns_parking_off_for_good() -> None:
    async def main(loop: ParkingEventLoop) -> bool:
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "signalled")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert await got == "signalled"
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        return parkable(loop)

    loop = ParkingEventLoop()  # on the main thread: signal handlers are allowed
    try:
        assert parkable(loop)
        assert loop.run_until_complete(asyncio.wait_for(main(loop), WAIT)) is False
    finally:
        loop.close()


def test_no_wake_up_is_lost_under_many_threads_calling_call_soon_threadsafe(loop_thread: ParkingEventLoop) -> None:
    # Each callback schedules nothing else: the loop runs it only if its
    # wake-up reached the loop (or a pass was running anyway). A lost one
    # would leave `all_ran` unset, and the hang guard would fail the test.
    threads, per_thread = 8, 2_000
    count = [0]
    all_ran = threading.Event()

    def tick() -> None:
        count[0] += 1
        if count[0] == threads * per_thread:
            all_ran.set()

    def send() -> None:
        for _ in range(per_thread):
            loop_thread.call_soon_threadsafe(tick)

    senders = [threading.Thread(target=send, name=f"test-sender-{i}") for i in range(threads)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(WAIT)
    assert all_ran.wait(WAIT)
    assert count[0] == threads * per_thread


def test_a_single_wake_up_after_each_park_is_never_lost(loop_thread: ParkingEventLoop) -> None:
    # One callback at a time, each sent only once the previous one ran: the
    # loop parks between them, so every one of them is a wake-up of a parked
    # (or parking) loop.
    ran = threading.Semaphore(0)
    for _ in range(2_000):
        loop_thread.call_soon_threadsafe(ran.release)
        assert ran.acquire(timeout=WAIT)


# -- through actors, every mode -----------------------------------------------------


class _Talker(Actor):
    """Opens a TCP connection to the port it is told and replies with the server's line (asyncio mode)."""

    async def on_receive(self, message: Any) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", message)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line


def test_an_asyncio_actor_does_socket_io_on_the_systems_own_loop(system: ActorSystem) -> None:
    def serve(listener: socket.socket, n: int) -> None:
        for _ in range(n):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"hi\n")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener, 3), name="test-server")
        server.start()
        ref = system.spawn(_Talker)
        port = listener.getsockname()[1]
        assert [ref.ask(port, timeout=WAIT) for _ in range(3)] == [b"hi\n"] * 3
        server.join(WAIT)
    assert isinstance(getattr(ref.actor_inbox.executor, "loop", None), ParkingEventLoop)


def _ask_from_threads(ref: Any, threads: int, per_thread: int) -> list[list[Any]]:
    replies: list[list[Any]] = [[] for _ in range(threads)]

    def ask(i: int) -> None:
        replies[i] = [ref.ask((i, j), timeout=WAIT) for j in range(per_thread)]

    askers = [threading.Thread(target=ask, args=(i,), name=f"test-asker-{i}") for i in range(threads)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(WAIT)
    return replies


def test_many_cross_thread_asks_each_get_their_reply(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode)
    threads, per_thread = 6, 300
    replies = _ask_from_threads(ref, threads, per_thread)
    assert replies == [[(i, j) for j in range(per_thread)] for i in range(threads)]


def test_many_asks_awaited_from_loops_on_other_threads_each_get_their_reply(system: ActorSystem, mode: str) -> None:
    # Each thread runs a loop of its own (one parking, one plain asyncio)
    # that awaits its asks one at a time: every reply wakes a loop that
    # may be parked, spinning or in epoll.
    ref = system.spawn(Recorder, mode=mode)
    per_loop = 300
    factories: list[Callable[[], asyncio.AbstractEventLoop]] = [ParkingEventLoop, asyncio.new_event_loop] * 2
    replies: list[list[Any]] = [[] for _ in factories]

    async def ask_all(i: int) -> list[Any]:
        return [await ref.ask((i, j), block=False) for j in range(per_loop)]

    def run(i: int) -> None:
        with asyncio.Runner(loop_factory=factories[i]) as runner:
            replies[i] = runner.run(asyncio.wait_for(ask_all(i), WAIT))

    loops = [threading.Thread(target=run, args=(i,), name=f"test-loop-{i}") for i in range(len(factories))]
    for thread in loops:
        thread.start()
    for thread in loops:
        thread.join(WAIT)
    assert replies == [[(i, j) for j in range(per_loop)] for i in range(len(factories))]
