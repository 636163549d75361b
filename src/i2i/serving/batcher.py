"""Dynamic batcher: groups requests into batches for a blocking model call, Triton-style.

It knows nothing of gRPC, models or arrays: the server gives it ``execute(key, payloads)``
and a key per request (direction, input shape, ...). Semantics:

- Only requests with equal keys share a batch. A request contributes ``size`` images; a
  batch's total size never exceeds ``max_batch``.
- A request may also carry a ``cost`` (the server gives its pixels): with ``max_cost``
  set, a batch takes no request that would bring its total cost above it, so it closes
  early and the rest wait for the next batch. A request whose cost alone is above
  ``max_cost`` still runs, in a batch of its own.
- A key's batch goes when its waiting requests reach ``max_batch`` in total size (or
  ``max_cost`` in total cost) or its oldest request has waited ``max_delay_s`` since
  submit, and only when one of the ``instances`` execution slots is free. A freed slot goes to the ready key whose oldest
  request is oldest, which takes its requests oldest first. ``max_delay_s == 0``: whatever
  is queued goes as soon as a slot is free.
- ``execute`` blocks (it runs a network), so it runs in a thread pool, never on the loop,
  and returns one result per payload, in order. If it raises, every request of the batch
  gets that exception; a wrong number of results fails the batch with a RuntimeError.
- With ``max_queue`` requests waiting, ``submit`` raises QueueFull at once. When a batch
  forms, requests past their deadline get Expired and requests whose caller has gone
  (cancelled) are dropped; neither costs compute.
- ``stop(drain=True)`` refuses new requests (Closed) and answers all accepted ones without
  waiting for ``max_delay_s``; ``stop(drain=False)`` fails waiting ones with Closed and
  lets running batches finish.

One scheduler task decides what runs; it sleeps on an asyncio.Event set by submits, batch
completions and a ``call_later`` timer for the next ``max_delay_s`` expiry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Execute = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass(frozen=True)
class Timing:
    """Where one request's time went, in seconds on the batcher's clock."""

    queue_s: float  # from submit to the start of its batch's execution
    compute_s: float  # the execute() call of its batch
    batch_size: int  # total size (sum of request sizes) of its batch


class BatcherError(Exception):
    """A request the batcher could not answer."""


class QueueFull(BatcherError):
    """``max_queue`` requests were already waiting; raised by submit at once."""


class Expired(BatcherError):
    """The request's deadline passed before its batch started; it cost no compute."""


class Closed(BatcherError):
    """The batcher is stopping (or stopped) and takes or keeps no more requests."""


class BatchObserver(Protocol):
    """Optional hooks for metrics; called on the event loop."""

    def on_batch(self, key: Hashable, size: int, compute_s: float, failed: bool) -> None: ...

    def on_expired(self, key: Hashable, count: int) -> None: ...


@dataclass(eq=False)
class _Request:
    key: Hashable
    payload: Any
    size: int
    cost: float
    deadline: float | None
    submitted_at: float
    future: asyncio.Future[tuple[Any, Timing]]
    waiting: bool = True  # in a queue, not yet taken into a batch


class DynamicBatcher:
    """Batches same-key requests for a blocking ``execute`` (see the module docstring).

    Args:
        execute: ``execute(key, payloads) -> results``, one result per payload, in order.
            Blocking; runs in ``executor``.
        max_batch: Largest total size of a batch.
        max_delay_s: Longest a request waits for companions before its batch goes.
        max_queue: Most requests waiting (not running) before submit raises QueueFull.
        max_cost: Largest total cost of a batch (None: no limit); see the module docstring.
        instances: Most batches executing at the same time.
        executor: Where ``execute`` runs; default a thread pool of ``instances`` workers
            owned (and shut down in stop) by the batcher.
        observer: Hooks for metrics.
        clock: Time source for delays, deadlines and Timing; it must advance in real time
            for ``max_delay_s`` to mean seconds (a fake clock suits deadlines only).
        name: Used in thread names, task names, logs and error messages.
    """

    def __init__(
        self,
        execute: Execute,
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        max_cost: float | None = None,
        instances: int = 1,
        executor: concurrent.futures.Executor | None = None,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "batcher",
    ) -> None:
        for label, value, least in (
            ("max_batch", max_batch, 1),
            ("max_delay_s", max_delay_s, 0),
            ("max_queue", max_queue, 1),
            ("instances", instances, 1),
        ):
            if value < least:
                raise ValueError(f"batcher {name!r}: {label} must be at least {least}, got {value}")
        self._execute = execute
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_queue = max_queue
        self._instances = instances
        self._executor = executor
        self._owns_executor = executor is None
        self._observer = observer
        self._clock = clock
        self._name = name
        if max_cost is not None and max_cost <= 0:
            raise ValueError(f"batcher {name!r}: max_cost must be above 0 or None, got {max_cost}")
        self._max_cost = max_cost
        self._queues: dict[Hashable, deque[_Request]] = {}  # key -> waiting, oldest first
        self._sizes: dict[Hashable, int] = {}  # key -> total size waiting
        self._costs: dict[Hashable, float] = {}  # key -> total cost waiting
        self._waiting = 0  # requests waiting
        self._in_flight = 0  # requests in running batches
        self._running = 0  # batches running
        # Requests admitted for this queue and still being decoded: the caller's count
        # (Pipeline), kept here because every direction that shares the batcher adds to it.
        self.preparing = 0
        self._closed = False
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()  # keeps running batch tasks alive

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @property
    def max_cost(self) -> float | None:
        """Largest total cost of a batch (None: no limit)."""
        return self._max_cost

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return self._waiting

    @property
    def in_flight(self) -> int:
        """Requests in running batches."""
        return self._in_flight

    async def start(self) -> None:
        """Start the scheduler on the running event loop; a second call does nothing."""
        if self._closed:
            raise Closed(f"batcher {self._name!r} was stopped; make a new one")
        if self._scheduler is not None:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._instances, thread_name_prefix=self._name
            )
        self._scheduler = asyncio.create_task(self._schedule(), name=f"{self._name}-scheduler")

    async def submit(
        self,
        key: Hashable,
        payload: Any,
        *,
        size: int = 1,
        cost: float = 0.0,
        deadline: float | None = None,
    ) -> tuple[Any, Timing]:
        """Queue one request and wait for its result.

        Args:
            key: Requests share a batch only with requests of an equal key.
            payload: Handed to ``execute`` as is.
            size: How many images the request contributes to its batch's size.
            cost: What it adds to its batch's cost (checked against max_cost), >= 0.
            deadline: Absolute time on the batcher's clock after which it is not computed.

        Returns:
            The request's result from ``execute`` and its Timing.

        Raises:
            ValueError: size is below 1 or above max_batch, or cost is negative.
            QueueFull: max_queue requests are already waiting.
            Closed: the batcher is stopping.
            Expired: the deadline passed before its batch started.
            Exception: whatever ``execute`` raised for its batch.
        """
        if not 1 <= size <= self._max_batch:
            raise ValueError(
                f"batcher {self._name!r}: request size must be 1 to max_batch "
                f"({self._max_batch}), got {size}; split the request"
            )
        if cost < 0:
            raise ValueError(f"batcher {self._name!r}: request cost must be >= 0, got {cost}")
        if self._closed:
            raise Closed(f"batcher {self._name!r} is stopping; it accepts no new requests")
        if self._scheduler is None:
            raise RuntimeError(f"batcher {self._name!r} is not started; await start() first")
        if self._waiting >= self._max_queue:
            raise QueueFull(
                f"batcher {self._name!r}: {self._waiting} requests already waiting "
                f"(max_queue {self._max_queue}); retry later"
            )
        future: asyncio.Future[tuple[Any, Timing]] = asyncio.get_running_loop().create_future()
        request = _Request(key, payload, size, cost, deadline, self._clock(), future)
        self._queues.setdefault(key, deque()).append(request)
        self._sizes[key] = self._sizes.get(key, 0) + size
        self._costs[key] = self._costs.get(key, 0.0) + cost
        self._waiting += 1
        self._wake.set()
        try:
            return await future
        finally:
            if request.waiting:  # cancelled while queued: give its slot back now
                self._queues[key].remove(request)
                self._forget(request)
                self._wake.set()
                if self._observer is not None:  # dropped before compute, like an expired one
                    self._observe(self._observer.on_expired, key, 1)

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests, answer or fail the accepted ones, and end the scheduler.

        Args:
            drain: True: execute everything accepted, without waiting for max_delay_s.
                False: fail waiting requests with Closed; running batches still finish.
        """
        self._closed = True
        if not drain:
            self._fail_waiting(Closed(f"batcher {self._name!r} stopped before this request ran"))
        self._wake.set()
        if self._scheduler is not None:
            await asyncio.shield(self._scheduler)  # a cancelled stop must not kill the loop
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)  # idle by now: every batch has finished

    def _forget(self, request: _Request) -> None:
        """Account for a request that has left its key's queue."""
        request.waiting = False
        self._waiting -= 1
        self._sizes[request.key] -= request.size
        self._costs[request.key] -= request.cost
        if not self._queues[request.key]:
            del self._queues[request.key], self._sizes[request.key], self._costs[request.key]

    def _pop_oldest(self, key: Hashable) -> _Request:
        request = self._queues[key].popleft()
        self._forget(request)
        return request

    def _fail_waiting(self, error: BatcherError) -> None:
        for key in list(self._queues):
            while key in self._queues:
                request = self._pop_oldest(key)
                if not request.future.done():
                    request.future.set_exception(error)

    def _next_ready(self, now: float) -> tuple[Hashable | None, float | None]:
        """The ready key with the oldest request, and else seconds until one is due."""
        ready: Hashable | None = None
        ready_since = 0.0
        wait: float | None = None
        for key, queue in self._queues.items():
            oldest = queue[0].submitted_at
            due = oldest + self._max_delay_s
            if self._closed or self._full(key) or now >= due:
                if ready is None or oldest < ready_since:
                    ready, ready_since = key, oldest
            else:
                wait = due - now if wait is None else min(wait, due - now)
        return ready, wait

    def _full(self, key: Hashable) -> bool:
        """Whether key's waiting requests fill a batch (by size, or by cost)."""
        if self._sizes[key] >= self._max_batch:
            return True
        return self._max_cost is not None and self._costs[key] >= self._max_cost

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                wait: float | None = None
                while self._running < self._instances:
                    key, wait = self._next_ready(self._clock())
                    if key is None:
                        break
                    self._dispatch(key)
                if self._closed and not self._waiting and not self._running:
                    return
                # With every slot busy only a finishing batch (or a stop) can change things.
                timer = None
                if wait is not None and self._running < self._instances:
                    timer = loop.call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
        except Exception:
            logger.exception("batcher %r: scheduler failed; failing waiting requests", self._name)
            self._closed = True
            self._fail_waiting(BatcherError(f"batcher {self._name!r} failed; see the server log"))
            raise

    def _dispatch(self, key: Hashable) -> None:
        """Take key's oldest live requests, up to max_batch (and max_cost), and start them."""
        now = self._clock()
        batch: list[_Request] = []
        total = expired = 0
        cost = 0.0
        while (queue := self._queues.get(key)) and total + queue[0].size <= self._max_batch:
            if batch and self._max_cost is not None and cost + queue[0].cost > self._max_cost:
                break  # the batch is full by cost; the first request always goes, alone if need be
            request = self._pop_oldest(key)
            if request.future.done():  # its caller has gone
                continue
            if request.deadline is not None and now >= request.deadline:
                request.future.set_exception(
                    Expired(
                        f"deadline passed after {now - request.submitted_at:.3f} s in the queue "
                        f"of batcher {self._name!r}; allow more time or retry when less busy"
                    )
                )
                expired += 1
                continue
            batch.append(request)
            total += request.size
            cost += request.cost
        if expired and self._observer is not None:
            self._observe(self._observer.on_expired, key, expired)
        if not batch:
            return
        self._running += 1
        self._in_flight += len(batch)
        task = asyncio.create_task(self._run_batch(key, batch, total), name=f"{self._name}-batch")
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, key: Hashable, batch: list[_Request], size: int) -> None:
        loop = asyncio.get_running_loop()
        error: Exception | None = None
        results: Sequence[Any] = ()
        started = self._clock()
        try:
            payloads = [request.payload for request in batch]
            results = await loop.run_in_executor(self._executor, self._execute, key, payloads)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batcher {self._name!r}: execute returned {len(results)} results for a "
                    f"batch of {len(batch)} requests; it must return one per payload, in order"
                )
        except Exception as exc:  # every request of the batch hears about it
            error = exc
        finally:
            compute_s = self._clock() - started
            self._running -= 1
            self._in_flight -= len(batch)
            self._wake.set()
        for index, request in enumerate(batch):
            if request.future.done():
                continue
            if error is not None:
                request.future.set_exception(error)
            else:
                timing = Timing(started - request.submitted_at, compute_s, size)
                request.future.set_result((results[index], timing))
        if self._observer is not None:
            self._observe(self._observer.on_batch, key, size, compute_s, error is not None)

    def _observe(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:  # metrics must never break serving
            logger.exception("batcher %r: observer hook %s failed", self._name, hook.__name__)
