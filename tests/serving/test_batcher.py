"""Tests for the dynamic batcher with fake work: batching, limits, deadlines, failures, stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Hashable, Sequence
from typing import Any

import pytest

from i2i.serving.batcher import Closed, DynamicBatcher, Expired, QueueFull, Timing

GUARD_S = 10  # hang guard only; nothing here should come near it


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a test coroutine on a fresh event loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coroutine, GUARD_S))


class Work:
    """A fake model: doubles each payload, records every batch, can be held running."""

    def __init__(self, fail_if_negative: bool = False, drop_one: bool = False) -> None:
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.threads: set[int] = set()
        self.entered = threading.Event()  # set when a batch starts
        self.gate = threading.Event()  # a batch waits here until the test sets it
        self.gate.set()
        self.fail_if_negative = fail_if_negative
        self.drop_one = drop_one

    def __call__(self, key: Hashable, payloads: list[Any]) -> Sequence[Any]:
        self.batches.append((key, list(payloads)))
        self.threads.add(threading.get_ident())
        self.entered.set()
        assert self.gate.wait(GUARD_S), "test never released the gate"
        if self.fail_if_negative and any(p < 0 for p in payloads):
            raise ValueError("negative payload")
        results = [p * 2 for p in payloads]
        return results[:-1] if self.drop_one else results

    def payloads_seen(self) -> list[Any]:
        return [p for _, batch in self.batches for p in batch]


class Observer:
    def __init__(self) -> None:
        self.batches: list[tuple[Hashable, int, bool]] = []
        self.expired: list[tuple[Hashable, int]] = []

    def on_batch(self, key: Hashable, size: int, compute_s: float, failed: bool) -> None:
        assert compute_s >= 0
        self.batches.append((key, size, failed))

    def on_expired(self, key: Hashable, count: int) -> None:
        self.expired.append((key, count))


async def hold(batcher: DynamicBatcher, work: Work, size: int = 1) -> asyncio.Task[Any]:
    """Occupy the (single) instance with a batch that runs until work.gate is set.

    With a long max_delay_s, pass size=max_batch so that the blocker goes at once.
    """
    work.gate.clear()
    work.entered.clear()
    blocker = asyncio.create_task(batcher.submit("hold", 0, size=size))
    assert await asyncio.to_thread(work.entered.wait, GUARD_S)
    return blocker


def spawn(batcher: DynamicBatcher, *requests: tuple[Hashable, Any]) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(batcher.submit(key, payload)) for key, payload in requests]


async def settle() -> None:
    """Let freshly created submit tasks reach the queue."""
    for _ in range(3):
        await asyncio.sleep(0)


def make(work: Work, **options: Any) -> DynamicBatcher:
    settings: dict[str, Any] = {"max_batch": 4, "max_delay_s": 0.0, "max_queue": 64}
    settings.update(options)
    return DynamicBatcher(work, **settings)


def test_results_in_order_and_timing_sane() -> None:
    async def main() -> list[tuple[Any, Timing]]:
        batcher = make(Work(), max_batch=8, max_delay_s=5.0)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit("k", x) for x in range(8)))
        await batcher.stop()
        return answers

    answers = run(main())
    assert [result for result, _ in answers] == [x * 2 for x in range(8)]
    for _, timing in answers:
        assert timing.queue_s >= 0 and timing.compute_s >= 0
        assert timing.batch_size == 8


def test_batches_never_exceed_max_batch_and_go_full_without_waiting_for_delay() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=4, max_delay_s=60.0)
        await batcher.start()
        # 12 concurrent requests and a 60 s delay: only full batches can answer in time.
        answers = await asyncio.gather(*(batcher.submit("k", x) for x in range(12)))
        await batcher.stop()
        return answers

    answers = run(main())
    assert [result for result, _ in answers] == [x * 2 for x in range(12)]
    assert [batch for _, batch in work.batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_queued_requests_split_into_batches_of_at_most_max_batch() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=4)
        await batcher.start()
        blocker = await hold(batcher, work)
        tasks = spawn(batcher, *(("k", x) for x in range(10)))
        await settle()
        assert batcher.queue_depth == 10 and batcher.in_flight == 1
        work.gate.set()
        answers = await asyncio.gather(blocker, *tasks)
        assert batcher.queue_depth == 0 and batcher.in_flight == 0
        await batcher.stop()
        return answers

    answers = run(main())
    assert [len(batch) for _, batch in work.batches] == [1, 4, 4, 2]
    assert [result for result, _ in answers[1:]] == [x * 2 for x in range(10)]
    assert [timing.batch_size for _, timing in answers[1:]] == [4] * 8 + [2] * 2


def test_lone_request_goes_after_max_delay() -> None:
    work = Work()
    delay = 0.05

    async def main() -> tuple[Any, Timing]:
        batcher = make(work, max_batch=8, max_delay_s=delay)
        await batcher.start()
        answer = await batcher.submit("k", 21)
        await batcher.stop()
        return answer

    result, timing = run(main())
    assert result == 42
    assert timing.batch_size == 1
    assert timing.queue_s >= delay  # it waited for companions that never came
    assert work.batches == [("k", [21])]


def test_different_keys_never_share_a_batch_and_oldest_key_goes_first() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=8)
        await batcher.start()
        blocker = await hold(batcher, work)
        tasks = spawn(batcher, ("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5))
        await settle()
        work.gate.set()
        answers = await asyncio.gather(blocker, *tasks)
        await batcher.stop()
        return answers

    answers = run(main())
    assert [result for result, _ in answers[1:]] == [2, 4, 6, 8, 10]
    # After the blocker: "b" holds the oldest request, then "a", then "c".
    assert work.batches[1:] == [("b", [1, 3]), ("a", [2, 5]), ("c", [4])]


def test_full_queue_rejects_at_once_and_slots_free_up() -> None:
    work = Work()

    async def main() -> None:
        batcher = make(work, max_queue=3)
        await batcher.start()
        blocker = await hold(batcher, work)
        tasks = spawn(batcher, ("k", 1), ("k", 2), ("k", 3))
        await settle()
        with pytest.raises(QueueFull, match="max_queue 3"):
            await batcher.submit("k", 4)
        work.gate.set()
        await asyncio.gather(blocker, *tasks)
        assert await asyncio.gather(*spawn(batcher, *(("k", x) for x in (5, 6, 7))))
        await batcher.stop()

    run(main())
    assert 4 not in work.payloads_seen()
    assert sorted(work.payloads_seen()) == [0, 1, 2, 3, 5, 6, 7]


def test_expired_request_gets_expired_and_is_never_computed() -> None:
    work = Work()
    observer = Observer()
    now = [100.0]

    async def main() -> None:
        batcher = make(work, observer=observer, clock=lambda: now[0])
        await batcher.start()
        blocker = await hold(batcher, work)
        late = asyncio.create_task(batcher.submit("k", 1, deadline=101.0))
        fine = asyncio.create_task(batcher.submit("k", 2, deadline=200.0))
        free = asyncio.create_task(batcher.submit("k", 3))
        await settle()
        now[0] = 102.0  # past the first deadline while the instance is busy
        work.gate.set()
        with pytest.raises(Expired, match="deadline passed"):
            await late
        assert (await fine)[0] == 4 and (await free)[0] == 6
        (_, timing) = await fine
        assert timing.queue_s == 2.0 and timing.batch_size == 2
        await blocker
        await batcher.stop()

    run(main())
    assert 1 not in work.payloads_seen()
    assert work.batches[1:] == [("k", [2, 3])]
    assert observer.expired == [("k", 1)]
    assert ("k", 2, False) in observer.batches


def test_all_expired_means_no_execute_call() -> None:
    work = Work()
    now = [0.0]

    async def main() -> None:
        batcher = make(work, clock=lambda: now[0])
        await batcher.start()
        blocker = await hold(batcher, work)
        late = asyncio.create_task(batcher.submit("k", 1, deadline=1.0))
        await settle()
        now[0] = 5.0
        work.gate.set()
        with pytest.raises(Expired):
            await late
        await blocker
        await batcher.stop()

    run(main())
    assert work.batches == [("hold", [0])]


def test_cancelled_submit_is_dropped_and_frees_its_queue_slot() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_queue=2)
        await batcher.start()
        blocker = await hold(batcher, work)
        gone, kept = spawn(batcher, ("k", 1), ("k", 2))
        await settle()
        with pytest.raises(QueueFull):
            await batcher.submit("k", 3)
        gone.cancel()
        await settle()
        assert gone.cancelled() and batcher.queue_depth == 1
        late = asyncio.create_task(batcher.submit("k", 4))  # the freed slot is usable
        await settle()
        work.gate.set()
        answers = await asyncio.gather(blocker, kept, late)
        await batcher.stop()
        return answers

    answers = run(main())
    assert [result for result, _ in answers] == [0, 4, 8]
    assert 1 not in work.payloads_seen()
    assert work.batches[1:] == [("k", [2, 4])]


def test_failing_execute_fails_only_its_batch() -> None:
    work = Work(fail_if_negative=True)
    observer = Observer()

    async def main() -> None:
        batcher = make(work, observer=observer)
        await batcher.start()
        blocker = await hold(batcher, work)
        bad_1, bad_2, other = spawn(batcher, ("k", -1), ("k", 2), ("j", 3))
        await settle()
        work.gate.set()
        errors = await asyncio.gather(bad_1, bad_2, return_exceptions=True)
        assert all(isinstance(e, ValueError) for e in errors)
        assert errors[0] is errors[1]  # the very exception execute raised
        assert (await other)[0] == 6
        assert (await batcher.submit("k", 5))[0] == 10  # same key serves on
        await blocker
        await batcher.stop()

    run(main())
    assert ("k", 2, True) in observer.batches
    assert ("j", 1, False) in observer.batches


def test_wrong_result_count_is_a_runtime_error() -> None:
    async def main() -> None:
        batcher = make(Work(drop_one=True))
        await batcher.start()
        with pytest.raises(RuntimeError, match="returned 0 results for a batch of 1"):
            await batcher.submit("k", 1)
        await batcher.stop()

    run(main())


def test_request_sizes_count_toward_max_batch() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=4)
        await batcher.start()
        with pytest.raises(ValueError, match="size must be 1 to max_batch"):
            await batcher.submit("k", 1, size=5)
        with pytest.raises(ValueError, match="size must be 1 to max_batch"):
            await batcher.submit("k", 1, size=0)
        blocker = await hold(batcher, work)
        sizes = {10: 2, 11: 1, 12: 3, 13: 1, 14: 4}
        tasks = [asyncio.create_task(batcher.submit("k", p, size=s)) for p, s in sizes.items()]
        await settle()
        work.gate.set()
        answers = await asyncio.gather(blocker, *tasks)
        await batcher.stop()
        return answers

    answers = run(main())
    # Oldest first, never over 4 images: [2+1], [3+1], [4].
    assert [batch for _, batch in work.batches[1:]] == [[10, 11], [12, 13], [14]]
    assert [timing.batch_size for _, timing in answers[1:]] == [3, 3, 4, 4, 4]


def test_batch_closes_early_when_the_next_request_would_exceed_max_cost() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=8, max_cost=100)
        await batcher.start()
        with pytest.raises(ValueError, match="cost must be >= 0"):
            await batcher.submit("k", 1, cost=-1)
        blocker = await hold(batcher, work)
        costs = {10: 40, 11: 50, 12: 20, 13: 250, 14: 30, 15: 30}
        tasks = [asyncio.create_task(batcher.submit("k", p, cost=c)) for p, c in costs.items()]
        await settle()
        work.gate.set()
        answers = await asyncio.gather(blocker, *tasks)
        await batcher.stop()
        return answers

    answers = run(main())
    # Oldest first, total cost at most 100 (a request over it alone): [40+50], [20], [250], [30+30].
    assert [batch for _, batch in work.batches[1:]] == [[10, 11], [12], [13], [14, 15]]
    assert [result for result, _ in answers[1:]] == [20, 22, 24, 26, 28, 30]


def test_a_batch_full_by_cost_goes_without_waiting_for_the_delay() -> None:
    work = Work()

    async def main() -> None:
        batcher = make(work, max_batch=8, max_delay_s=GUARD_S * 2, max_cost=100)
        await batcher.start()
        # Far below max_batch in size, but at max_cost: it goes now, not after the delay.
        await asyncio.gather(batcher.submit("k", 1, cost=60), batcher.submit("k", 2, cost=40))
        await batcher.stop()

    run(main())
    assert work.batches == [("k", [1, 2])]


def test_without_max_cost_costs_are_ignored() -> None:
    work = Work()

    async def main() -> None:
        batcher = make(work, max_batch=4)
        await batcher.start()
        blocker = await hold(batcher, work)
        tasks = [asyncio.create_task(batcher.submit("k", p, cost=1e12)) for p in range(4)]
        await settle()
        work.gate.set()
        await asyncio.gather(blocker, *tasks)
        await batcher.stop()

    run(main())
    assert [batch for _, batch in work.batches[1:]] == [[0, 1, 2, 3]]


def test_two_instances_run_two_batches_at_once() -> None:
    first_in, second_in = threading.Event(), threading.Event()

    def execute(key: Hashable, payloads: list[Any]) -> list[Any]:
        # Each batch waits for the other to start: only concurrent batches both finish.
        mine, other = (first_in, second_in) if key == "a" else (second_in, first_in)
        mine.set()
        if not other.wait(GUARD_S):
            raise TimeoutError("the other batch never ran alongside this one")
        return payloads

    async def main() -> list[Any]:
        batcher = DynamicBatcher(execute, max_batch=4, max_delay_s=0, max_queue=8, instances=2)
        await batcher.start()
        answers = await asyncio.gather(batcher.submit("a", 1), batcher.submit("b", 2))
        await batcher.stop()
        return answers

    assert [result for result, _ in run(main())] == [1, 2]


def test_stop_with_drain_answers_everything_accepted() -> None:
    work = Work()

    async def main() -> list[Any]:
        batcher = make(work, max_batch=4, max_delay_s=60.0)
        await batcher.start()
        blocker = await hold(batcher, work, size=4)
        tasks = spawn(batcher, ("a", 1), ("b", 2), ("a", 3))
        await settle()
        stopping = asyncio.create_task(batcher.stop(drain=True))
        await settle()
        with pytest.raises(Closed):
            await batcher.submit("a", 4)
        work.gate.set()
        # max_delay_s is 60 s: only draining without the delay answers within the guard.
        answers = await asyncio.gather(blocker, *tasks)
        await stopping
        await batcher.stop()  # idempotent
        with pytest.raises(Closed):
            await batcher.submit("a", 5)
        return answers

    answers = run(main())
    assert [result for result, _ in answers] == [0, 2, 4, 6]
    assert sorted(work.payloads_seen()) == [0, 1, 2, 3]


def test_stop_without_drain_fails_waiting_and_finishes_running() -> None:
    work = Work()

    async def main() -> None:
        batcher = make(work)
        await batcher.start()
        blocker = await hold(batcher, work)
        tasks = spawn(batcher, ("k", 1), ("k", 2))
        await settle()
        stopping = asyncio.create_task(batcher.stop(drain=False))
        await settle()
        for task in tasks:
            with pytest.raises(Closed, match="stopped before this request ran"):
                await task
        assert not stopping.done()  # the running batch still holds it
        work.gate.set()
        assert (await blocker)[0] == 0
        await stopping

    run(main())
    assert work.batches == [("hold", [0])]


def test_execute_runs_off_the_event_loop_thread() -> None:
    work = Work()

    async def main() -> int:
        batcher = make(work)
        await batcher.start()
        await asyncio.gather(*(batcher.submit("k", x) for x in range(5)))
        await batcher.stop()
        return threading.get_ident()

    loop_thread = run(main())
    assert work.threads and loop_thread not in work.threads


def test_bad_settings_and_submit_before_start_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        make(Work(), max_batch=0)
    with pytest.raises(ValueError, match="max_delay_s must be at least 0"):
        make(Work(), max_delay_s=-1)
    with pytest.raises(ValueError, match="max_cost must be above 0 or None, got 0"):
        make(Work(), max_cost=0)

    async def main() -> None:
        batcher = make(Work())
        with pytest.raises(RuntimeError, match="await start"):
            await batcher.submit("k", 1)

    run(main())
