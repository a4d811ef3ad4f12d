"""JSONL audit logs: one flat JSON object per line, in daily files per stream (the seed's file logging).

    log = enable_audit_log("./logs", retention_days=30, system=system)
    ...                                     # the runtime and the services emit events
    log.statistics()                        # files, sizes, events written, dropped
    disable_audit_log(system)               # flushes, closes, joins the writer thread
                                            # (system.shutdown() does it too)

Layout, as the seed's: ``<dir>/<YYYY-MM-DD>/<stream>_<YYYY-MM-DD>.jsonl``,
one file per stream and day (UTC). A file that reaches `max_bytes` is
renamed ``<stream>_<YYYY-MM-DD>.<n>.jsonl`` (n = 1, 2, ...) and a new one
started; with ``compression="gzip"`` every closed file (size-rotated, or of
a day that ended) becomes ``... .jsonl.gz``. Day directories older than
`retention_days` are deleted when a day starts, at enable time and on
`flush`. Days are read from the *system clock* (anchored to the wall clock
at enable time), so a `ManualClock` drives rotation and retention in tests.

Each line holds ``timestamp`` (ISO 8601, UTC, milliseconds, ``Z``),
``stream``, ``system`` and ``event``, then the event's own fields (the
README lists them per stream). Values are JSON scalars; anything else is
written as its ``str()``.

Cost. The emitting thread only appends a tuple to a deque (no lock, no
formatting, no I/O); the writer thread (``troupe-audit-<system>``) formats
and writes every `flush_interval` seconds, in batches (an `AuditRecord`
renders its lines straight into the batch). loguru's own sinks were
measured against it (100,000 ``task_history`` events, a file sink per
stream with daily rotation and retention, the line built by the sender;
2026-12-02 21:27, load 7-15): the sender's CPU per event 1.0-1.1 µs here,
54-70 µs with ``enqueue=True`` (a record built and pickled through a pipe
per call) and 21-22 µs without (formatted and written on the sender's
thread); events written 78k-160k/s here, 3.8k-6.1k/s and 15k-18k/s with
loguru. So the sinks are troupe's own writer, and loguru gets the
writer's problem reports. ``message_audit`` is opt-in (``streams=AUDIT_STREAMS``) and
sampled (`message_sample`): it is the one stream with an event per message.

Errors. A directory that cannot be written is refused at enable time with
`AuditLogError`. A write that fails later (a full disk, a removed
directory) never reaches a runtime thread: the writer drops that batch,
counts it (`AuditStatistics.dropped`, ``write_errors``, ``last_error``),
logs it once at ERROR (and once when writing works again), and keeps
going. More than `max_pending` events waiting (a writer that cannot keep
up) are dropped on the sender's side and counted the same way.

Thread contract: `enable_audit_log`, `disable_audit_log`, `audit_log`,
`AuditLog.flush`, `AuditLog.statistics` and `AuditLog.log_performance` may
be called from any thread except the writer's own; the sink the channel
calls runs on whichever thread emits.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import gzip
import itertools
import json
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Self

import attrs
from loguru import logger

from actors._core import (
    AUDIT_STREAMS,
    Actor,
    ActorRef,
    ActorSystem,
    AuditChannel,
    AuditRecord,
    FrozenDict,
    check_count,
    check_seconds,
    default_system,
)
from actors.errors import AuditLogError, MetricsOffError

__all__ = [
    "DEFAULT_AUDIT_STREAMS",
    "AuditLog",
    "AuditStatistics",
    "audit_log",
    "disable_audit_log",
    "enable_audit_log",
]

DEFAULT_AUDIT_STREAMS = tuple(s for s in AUDIT_STREAMS if s != "message_audit")
"""Every stream but ``message_audit`` (one event per message: opt in to it)."""

_Event = dict[str, object] | AuditRecord | Callable[[float], dict[str, object] | str]
"""An event as the sink queues it: its dict, a record rendering its lines, or a deferred event (`AuditChannel`)."""

_DAY = 86400.0
_NOT_READY_WAIT = 0.001
"""Seconds the writer waits before it looks again at a deferred event that was not ready."""
_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False, default=str).encode


def _fast_encoder() -> Callable[[dict[str, object]], str]:
    """Return a compact JSON encoder for flat dicts that skips `JSONEncoder.encode`'s per-call set-up.

    ``encode`` builds a C encoder (and a closure) on every call; this builds
    it once. Same output as `_encode`; falls back to it where the C
    accelerator is missing.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encode
    c_encode = make(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode(fields: dict[str, object]) -> str:
        return "".join(c_encode(fields, 0))

    return encode


_encode_fields = _fast_encoder()


@attrs.frozen
class AuditStatistics:
    """A snapshot of an audit log.

    Attributes:
        directory: where the log writes.
        streams: the streams it records.
        written: events written, per stream.
        dropped: events lost (writes that failed, or the queue over `max_pending`).
        write_errors: writes (batches) that failed.
        last_error: the last write error, or None.
        pending: events waiting for the writer.
        files: every log file under `directory` (path relative to it) and its size in bytes.
        total_bytes: the sum of the sizes.
        days: the day directories present, oldest first.
        writer_cpu_seconds: CPU time the writer thread has used (NaN where
            the platform cannot tell, or once the thread has ended).
    """

    directory: str
    streams: tuple[str, ...]
    written: FrozenDict[str, int]
    dropped: int
    write_errors: int
    last_error: str | None
    pending: int
    files: FrozenDict[str, int]
    total_bytes: int
    days: tuple[str, ...]
    writer_cpu_seconds: float = math.nan


class _WallClock:
    """The system clock read as UTC wall time: the wall clock at enable time plus the clock's advance since."""

    __slots__ = ("_base", "_clock", "_epoch")

    def __init__(self, system: ActorSystem) -> None:
        self._clock = system.clock
        self._base = self._clock.now()
        self._epoch = time.time()

    def at(self, reading: float) -> float:
        return self._epoch + (reading - self._base)

    def now(self) -> float:
        return self.at(self._clock.now())


def _day_of(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


class _Stamps:
    """Formats wall times as ISO 8601 UTC with milliseconds; the day's part is computed once per day."""

    __slots__ = ("_day", "_prefix")

    def __init__(self) -> None:
        self._day = -1
        self._prefix = ""

    def format(self, ms: int) -> tuple[str, str]:
        """Return ``(timestamp, day)`` for `ms`, milliseconds since the epoch."""
        day, ms_of_day = divmod(ms, 86_400_000)
        if day != self._day:
            self._day = day
            self._prefix = _day_of(day * _DAY)
        seconds, milli = divmod(ms_of_day, 1000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return f"{self._prefix}T{hours:02d}:{minutes:02d}:{seconds:02d}.{milli:03d}Z", self._prefix


class _File:
    __slots__ = ("day", "handle", "path", "size")

    def __init__(self, path: Path, day: str) -> None:
        self.path = path
        self.day = day
        self.handle: IO[str] | None = None
        self.size = 0


class _Files:
    """The open files of one log; used by the writer thread only."""

    def __init__(self, directory: Path, max_bytes: int | None, compression: str | None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.compression = compression
        # Invariant: at most one open file per stream, the one of the latest day written.
        self.open: dict[str, _File] = {}

    def path(self, stream: str, day: str) -> Path:
        return self.directory / day / f"{stream}_{day}.jsonl"

    def write(self, stream: str, day: str, text: str) -> None:
        """Append `text` to the stream's file of `day`, rotating by day and size. Raises OSError."""
        file = self.open.get(stream)
        if file is not None and file.day != day:
            self.close(stream, finished=True)
            file = None
        if file is None:
            path = self.path(stream, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            file = _File(path, day)
            file.handle = path.open("a", encoding="utf-8")
            file.size = path.stat().st_size
            self.open[stream] = file
        handle = file.handle
        if handle is None:
            msg = f"audit file {file.path} has no handle"
            raise OSError(msg)
        try:
            handle.write(text)
            handle.flush()
        except OSError:
            self.discard(stream)  # its buffer holds part of the batch: reopen next time
            raise
        file.size += len(text.encode("utf-8")) if not text.isascii() else len(text)
        if self.max_bytes is not None and file.size >= self.max_bytes:
            self.close(stream, finished=True, rotate=True)

    def discard(self, stream: str) -> None:
        file = self.open.pop(stream, None)
        if file is not None and file.handle is not None:
            with contextlib.suppress(OSError):  # the write error is what gets reported
                file.handle.close()

    def close(self, stream: str, *, finished: bool, rotate: bool = False) -> None:
        file = self.open.pop(stream, None)
        if file is None or file.handle is None:
            return
        file.handle.close()
        path = file.path
        if rotate:
            stem = path.name.removesuffix(".jsonl")
            for n in itertools.count(1):
                target = path.with_name(f"{stem}.{n}.jsonl")
                if not target.exists() and not target.with_name(target.name + ".gz").exists():
                    break
            path = path.rename(target)
        if finished and self.compression == "gzip" and path.exists():
            with path.open("rb") as source, gzip.open(path.with_name(path.name + ".gz"), "wb") as sink:
                shutil.copyfileobj(source, sink)
            path.unlink()

    def close_all(self) -> None:
        for stream in list(self.open):
            self.close(stream, finished=False)


class _Sample:
    """The sampler's timer message."""


class _PerformanceSampler(Actor):
    """Every `interval` seconds of the system clock, writes the flat metrics as ``performance`` events.

    With metrics off (no `enable_metrics`) a tick writes nothing. Runs on its own turns.
    """

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._interval = interval
        self._tick = _Sample()

    def on_start(self) -> None:
        self.timers.start_periodic_timer("sample", self._tick, self._interval)

    def on_receive(self, message: object) -> None:
        if message is not self._tick:
            return
        audit = self.actor_system.audit
        if not audit.performance:
            return
        try:
            flat = self.actor_system.metrics().flat()
        except MetricsOffError:
            return
        for name, value in flat.items():
            unit = "s" if "seconds" in name else ("ratio" if name.endswith("utilization") else "")
            audit.emit("performance", {"event": "sample", "metric": name, "value": value, "unit": unit})


class AuditLog:
    """The JSONL audit log of one system (see the module docstring); make it with `enable_audit_log`."""

    def __init__(
        self,
        system: ActorSystem,
        directory: str | os.PathLike[str],
        *,
        retention_days: int | None = 30,
        streams: Iterable[str] = DEFAULT_AUDIT_STREAMS,
        message_sample: int = 1,
        max_bytes: int | None = 64 * 1024 * 1024,
        compression: str | None = None,
        flush_interval: float = 0.05,
        max_pending: int = 1_000_000,
        performance_interval: float | None = 60.0,
    ) -> None:
        check_seconds("performance_interval", performance_interval, optional=True, owner="enable_audit_log")
        check_count("retention_days", retention_days, minimum=1, optional=True, owner="enable_audit_log")
        check_count("max_bytes", max_bytes, minimum=1, optional=True, owner="enable_audit_log")
        check_count("max_pending", max_pending, minimum=1, owner="enable_audit_log")
        check_count("message_sample", message_sample, minimum=1, owner="enable_audit_log")
        if compression not in (None, "gzip"):
            msg = f"enable_audit_log: compression must be None or 'gzip', got {compression!r}"
            raise ValueError(msg)
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, int | float) or not flush_interval > 0:
            msg = f"enable_audit_log: flush_interval must be a number of seconds > 0, got {flush_interval!r}"
            raise ValueError(msg)
        self.streams = tuple(streams)
        unknown = sorted(set(self.streams) - set(AUDIT_STREAMS))
        if unknown:
            msg = f"enable_audit_log: unknown streams {unknown}; the streams are {list(AUDIT_STREAMS)}"
            raise ValueError(msg)
        self.system = system
        self.directory = Path(directory)
        self.retention_days = retention_days
        self.message_sample = message_sample
        self.max_pending = max_pending
        self.performance_interval = performance_interval
        self._sampler: ActorRef[Any] | None = None
        self._flush_interval = float(flush_interval)
        self._wall = _WallClock(system)
        self._probe()
        self._files = _Files(self.directory, max_bytes, compression)
        self._stamps = _Stamps()
        self._system_name = _encode(system.name)
        # Events waiting for the writer: (stream, clock reading, fields). deque.append and popleft
        # are atomic, so senders take no lock.
        self._queue: collections.deque[tuple[str, float, _Event]] = collections.deque()
        self._written: dict[str, int] = dict.fromkeys(AUDIT_STREAMS, 0)
        self._overflowed = itertools.count()  # next() is atomic: senders count their drops
        self._sink = self._make_sink()
        self._write_dropped = 0
        self._write_errors = 0
        self._last_error: str | None = None
        self._failing = False
        self._today = ""
        # flush(): a caller raises _asked and waits until the writer has written up to it.
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._asked = 0
        self._served = 0
        self._stopping = False
        self._wake = threading.Event()
        self._housekeep(self._wall.now())
        self._thread = threading.Thread(target=self._run, name=f"troupe-audit-{system.name}", daemon=True)
        self._thread.start()
        self._channel: AuditChannel | None = None

    def __repr__(self) -> str:
        return f"AuditLog({str(self.directory)!r}, system={self.system.name!r}, streams={list(self.streams)})"

    @property
    def sampler(self) -> ActorRef[Any] | None:
        """The actor that samples the metrics into ``performance`` (None without `performance_interval`)."""
        return self._sampler

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the sender's side ---------------------------------------------------------------
    def sink(self, stream: str, fields: _Event) -> None:
        """Queue one event (the `AuditChannel`'s sink): a deque append, on the emitting thread."""
        self._sink(stream, fields)

    def _make_sink(self) -> Callable[[str, _Event], None]:
        # A closure over locals: the sender pays a length check, a clock read and an append.
        queue, append, limit = self._queue, self._queue.append, self.max_pending
        clock = self.system.clock
        # The real clock's `now` is `time.monotonic` itself (`MonotonicClock`): a C call a reading.
        now = clock.now
        overflowed = self._overflowed

        def sink(stream: str, fields: _Event) -> None:
            if len(queue) >= limit:
                next(overflowed)
                if isinstance(fields, AuditRecord):
                    fields.lost()
                return
            append((stream, now(), fields))

        return sink

    def log_performance(self, metric: str, value: float, unit: str = "", **fields: object) -> None:
        """Record a performance sample (as the seed's ``log_performance_metric``), if that stream is on."""
        channel = self._channel
        if channel is not None and channel.performance:
            channel.emit("performance", {"event": "sample", "metric": metric, "value": value, "unit": unit, **fields})

    # -- control -------------------------------------------------------------------------
    def attach(self) -> None:
        """Connect to the system's audit channel (`enable_audit_log` does it)."""
        channel = self.system.audit
        channel.attach(self._sink, self.streams, message_sample=self.message_sample, on_close=self.close)
        self._channel = channel
        if self.performance_interval is not None and "performance" in self.streams:
            self._sampler = self.system.spawn(_PerformanceSampler, self.performance_interval)

    def flush(self, *, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted before this call is written (and old days cleaned up).

        Returns False if `timeout` passed first.
        """
        with self._lock:
            self._asked += 1
            target = self._asked
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._served >= target or not self._thread.is_alive(), timeout)

    def close(self, *, timeout: float | None = 10.0) -> None:
        """Detach, write what is queued, close the files and join the writer thread (idempotent)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.detach()
        sampler, self._sampler = self._sampler, None
        if sampler is not None and sampler.is_alive():
            sampler.stop(block=False)  # a tick still queued finds the stream off and writes nothing
        with _registry_lock:
            if _logs.get(self.system) is self:
                del _logs[self.system]
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def cleanup_old_logs(self, days_to_keep: int | None = None) -> list[str]:
        """Delete the day directories older than `days_to_keep` (default `retention_days`); return them.

        Runs on the calling thread; the writer does the same by itself every day.
        """
        keep = self.retention_days if days_to_keep is None else days_to_keep
        check_count("days_to_keep", keep, minimum=1, optional=True, owner="AuditLog.cleanup_old_logs")
        if keep is None:
            return []
        today = dt.date.fromisoformat(_day_of(self._wall.now()))
        oldest = (today - dt.timedelta(days=keep - 1)).isoformat()
        removed = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir() and _DAY_DIR.match(entry.name) and entry.name < oldest:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def statistics(self) -> AuditStatistics:
        """Return a snapshot: events written and dropped, and every file with its size (walks the directory)."""
        files: dict[str, int] = {}
        days = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            if not (entry.is_dir() and _DAY_DIR.match(entry.name)):
                continue
            days.append(entry.name)
            for path in sorted(Path(entry.path).iterdir()):
                try:
                    files[f"{entry.name}/{path.name}"] = path.stat().st_size
                except OSError:
                    continue  # removed while we looked
        overflowed = _peek(self._overflowed)
        return AuditStatistics(
            directory=str(self.directory),
            streams=self.streams,
            written=FrozenDict((s, self._written[s]) for s in self.streams),
            dropped=self._write_dropped + overflowed,
            write_errors=self._write_errors,
            last_error=self._last_error,
            pending=len(self._queue),
            files=FrozenDict(files),
            total_bytes=sum(files.values()),
            days=tuple(days),
            writer_cpu_seconds=self._writer_cpu(),
        )

    def _writer_cpu(self) -> float:
        ident = self._thread.ident
        getclock = getattr(time, "pthread_getcpuclockid", None)
        if ident is None or getclock is None or not self._thread.is_alive():
            return math.nan
        try:
            return time.clock_gettime(getclock(ident))
        except OSError:  # the thread ended meanwhile
            return math.nan

    # -- the writer thread ---------------------------------------------------------------
    def _probe(self) -> None:
        """Refuse a directory that cannot be written, now rather than in the writer later."""
        day = _day_of(self._wall.now())
        try:
            target = self.directory / day
            target.mkdir(parents=True, exist_ok=True)
            probe = target / f".troupe-audit-probe-{os.getpid()}-{threading.get_ident()}"
            with probe.open("w", encoding="utf-8") as handle:
                handle.write("{}\n")
            probe.unlink()
        except OSError as error:
            msg = (
                f"enable_audit_log: cannot write audit files under {str(self.directory)!r} "
                f"({type(error).__name__}: {error}); pass a directory this process can create and write"
            )
            raise AuditLogError(msg) from error

    def _run(self) -> None:
        wait = self._flush_interval
        while True:
            self._wake.wait(wait)  # the writer's cadence: batches, not one write per event
            self._wake.clear()
            with self._lock:
                asked, stopping = self._asked, self._stopping
            complete = True
            try:
                complete = self._drain()
                self._housekeep(self._wall.now(), force=asked > self._served)
            except Exception as error:  # noqa: BLE001 - the writer never dies: it reports and goes on
                self._failed(error, 0)
            # A deferred event not ready yet (its emitter still at it, microseconds): back soon for it.
            wait = self._flush_interval if complete else min(self._flush_interval, _NOT_READY_WAIT)
            if not complete:
                continue
            if stopping and not self._queue:
                break
            with self._done:
                self._served = asked
                self._done.notify_all()
        try:
            self._files.close_all()
        except OSError as error:
            self._failed(error, 0)
        with self._done:
            self._served = self._asked
            self._done.notify_all()

    def _drain(self) -> bool:
        """Write what is queued, in batches per file; return False if it stopped at an event not ready yet."""
        queue, stamps, name, encode, records = self._queue, self._stamps, self._system_name, _encode_fields, _RECORDS
        popleft = queue.popleft
        offset = self._wall.at(0.0)  # wall time = reading + offset
        batches: dict[tuple[str, str], list[str]] = {}
        # Per stream, for the millisecond `last_ms`: the lines' common head and the batch they go to.
        heads: dict[str, tuple[str, list[str]]] = {}
        # The millisecond of the heads is [low, high): a reading in it is two float comparisons,
        # no int() call (ms == int(t) exactly when ms <= t < ms + 1, t > 0).
        low = high = -1.0
        complete = True
        while queue:
            item = popleft()
            stream, reading, event = item
            t = (reading + offset) * 1000.0
            if not low <= t < high:
                ms = int(t)
                low = float(ms)
                high = low + 1.0
                heads.clear()
            found = heads.get(stream)
            if found is None:
                stamp, day = stamps.format(ms)
                batch = batches.get((stream, day))
                if batch is None:
                    batch = batches[stream, day] = []
                found = heads[stream] = (f'{{"timestamp":"{stamp}","stream":"{stream}","system":{name}', batch)
            head, batch = found
            cls = event.__class__
            if cls is dict:
                body = encode(event)  # type: ignore[arg-type]
            elif cls in records or _is_record(cls, records):  # renders its own lines into the batch
                try:
                    ready = event.render(head, reading, batch)  # type: ignore[union-attr]
                except Exception as error:  # noqa: BLE001 - a faulty emitter loses its event, not the batch
                    self._lost_deferred(error, stream)
                    continue
                if not ready:  # it and what follows it wait for the next round
                    queue.appendleft(item)
                    complete = False
                    break
                continue
            else:  # a deferred event (`AuditChannel`): built here, on the writer's thread, in queue order
                try:
                    built = event(reading)  # type: ignore[operator]
                    body = built if isinstance(built, str) else encode(built)  # a str: encoded by its emitter
                except Exception as error:  # noqa: BLE001 - a faulty emitter loses its event, not the batch
                    self._lost_deferred(error, stream)
                    continue
            batch.append(f"{head},{body[1:]}\n" if len(body) > 2 else f"{head}}}\n")  # noqa: PLR2004 - "{}"
        for (stream, day), lines in batches.items():
            try:
                self._files.write(stream, day, "".join(lines))
            except OSError as error:
                self._failed(error, len(lines))
            else:
                self._written[stream] += len(lines)
                if self._failing:
                    self._failing = False
                    logger.info("Audit log {}: writing works again ({} events dropped so far)", self, self._dropped())
        return complete

    def _lost_deferred(self, error: Exception, stream: str) -> None:
        self._write_dropped += 1
        self._last_error = f"{type(error).__name__}: {error}"
        logger.opt(exception=error).error("Audit log {}: building a deferred {} event failed", self, stream)

    def _dropped(self) -> int:
        return self._write_dropped + _peek(self._overflowed)

    def _failed(self, error: BaseException, lost: int) -> None:
        self._write_errors += 1
        self._write_dropped += lost
        self._last_error = f"{type(error).__name__}: {error}"
        if not self._failing:
            self._failing = True
            logger.error(
                "Audit log {}: a write failed ({}); its {} events are dropped, and so is every batch until "
                "writing works again (the system runs on; see statistics().dropped)",
                self,
                self._last_error,
                lost,
            )

    def _housekeep(self, now: float, *, force: bool = False) -> None:
        today = _day_of(now)
        if today == self._today and not force:
            return
        self._today = today
        for stream, file in list(self._files.open.items()):
            if file.day < today:
                self._files.close(stream, finished=True)  # a day that ended: closed (and compressed)
        self.cleanup_old_logs()


_RECORDS: set[type] = set()
"""The `AuditRecord` classes the writers have met: a set look-up a line where ``isinstance`` was ~160 instructions."""


def _is_record(cls: type, records: set[type]) -> bool:
    """Whether `cls` is an `AuditRecord` class (remembered in `records` if so); a writer's thread."""
    if issubclass(cls, AuditRecord):
        records.add(cls)  # set.add is atomic: two writers may add the same class
        return True
    return False


def _peek(counter: itertools.count[int]) -> int:
    """Return how many times `counter` was advanced (a count's repr shows its next value)."""
    return int(repr(counter)[6:-1])


_registry_lock = threading.RLock()  # AuditLog.close takes it too, also from enable_audit_log's failure path
_logs: dict[ActorSystem, AuditLog] = {}
_exit_hook = False


def _close_at_exit() -> None:
    """At interpreter exit, write what the logs still queue (the writer is a daemon thread)."""
    with _registry_lock:
        logs = list(_logs.values())
    for log in logs:
        log.close(timeout=5.0)


def enable_audit_log(
    directory: str | os.PathLike[str],
    retention_days: int | None = 30,
    *,
    system: ActorSystem | None = None,
    streams: Iterable[str] = DEFAULT_AUDIT_STREAMS,
    message_sample: int = 1,
    max_bytes: int | None = 64 * 1024 * 1024,
    compression: str | None = None,
    flush_interval: float = 0.05,
    max_pending: int = 1_000_000,
    performance_interval: float | None = 60.0,
) -> AuditLog:
    """Write the audit events of `system` (default: `default_system()`) as JSONL files under `directory`.

    Off until called: the library never adds a sink by itself. Returns the
    `AuditLog` (also a context manager that disables it).

    Args:
        directory: the log's root; created if missing.
        retention_days: days kept, today included (None: keep all).
        system: whose events to record.
        streams: which streams to record (default all but ``message_audit``:
            pass `AUDIT_STREAMS` for all).
        message_sample: record one publication in this many (``message_audit``).
        max_bytes: size at which a day's file is rotated (None: only daily).
        compression: ``"gzip"`` to compress closed files, or None.
        flush_interval: seconds between the writer's batches.
        max_pending: events queued at most; more are dropped and counted.
        performance_interval: seconds of the system clock between samples of
            the flat metrics (`enable_metrics`) into ``performance``; None: none.

    Raises:
        AuditLogError: `directory` cannot be created or written, or the
            system's audit log is enabled already.
        ValueError: a bad argument (the message names it).
    """
    global _exit_hook  # noqa: PLW0603 - once per process, under the lock
    target = system if system is not None else default_system()
    with _registry_lock:
        if not _exit_hook:
            atexit.register(_close_at_exit)
            _exit_hook = True
        if target in _logs or target.audit.attached:
            msg = f"the audit log of {target.name} is enabled already; call disable_audit_log() first"
            raise AuditLogError(msg)
        log = AuditLog(
            target,
            directory,
            retention_days=retention_days,
            streams=streams,
            message_sample=message_sample,
            max_bytes=max_bytes,
            compression=compression,
            flush_interval=flush_interval,
            max_pending=max_pending,
            performance_interval=performance_interval,
        )
        try:
            log.attach()
        except BaseException:
            log.close()
            raise
        _logs[target] = log
    return log


def disable_audit_log(system: ActorSystem | None = None, *, timeout: float | None = 10.0) -> AuditStatistics | None:
    """Stop recording, write what is queued, close the files, join the writer; return the last statistics.

    Returns None if the log was not enabled. Idempotent.
    """
    target = system if system is not None else default_system()
    with _registry_lock:
        log = _logs.get(target)
    if log is None:
        return None
    log.close(timeout=timeout)
    return log.statistics()


def audit_log(system: ActorSystem | None = None) -> AuditLog | None:
    """Return the enabled audit log of `system` (default: `default_system()`), or None."""
    target = system if system is not None else default_system()
    with _registry_lock:
        return _logs.get(target)
