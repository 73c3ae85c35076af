"""The token buckets behind the API's rate limits (api.limits), on a clock the test moves."""

from __future__ import annotations

from api.limits import Buckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_refill_rate():
    clock = Clock()
    buckets = Buckets(burst=3, per_s=0.5, max_keys=10, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 2]
    assert buckets.wait_s("a") == 2
    assert buckets.take("b") == 0  # each key its own bucket
    clock.now = 1.0
    assert buckets.take("a") == 1  # half a request back: one more second
    clock.now = 2.0
    assert (buckets.take("a"), buckets.take("a")) == (0, 2)
    clock.now = 1_000.0
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 2]  # refills up to the burst


def test_a_refused_request_costs_nothing():
    clock = Clock()
    buckets = Buckets(burst=1, per_s=1.0, max_keys=10, clock=clock)
    buckets.take("a")
    for _ in range(100):
        assert buckets.take("a") == 1
    clock.now = 1.0
    assert buckets.take("a") == 0


def test_the_keys_held_are_capped():
    buckets = Buckets(burst=1, per_s=1.0, max_keys=100, clock=Clock())
    for i in range(10_000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100
    # The most recent keys are the ones kept.
    assert buckets.wait_s("10.0.39.15") == 1
    assert buckets.wait_s("10.0.0.0") == 0
