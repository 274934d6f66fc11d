"""The in-process budget of the licence routes (worker/web/ratelimit.py: TokenBucket)."""

from __future__ import annotations

from worker.web.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_rate_then_one_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(5, clock)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.2  # one token's worth at 5 a second
    assert [bucket.take(), bucket.take()] == [True, False]


def test_an_idle_bucket_holds_no_more_than_one_second_of_requests() -> None:
    clock = Clock()
    bucket = TokenBucket(3, clock)
    clock.now += 3600
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_rate_of_zero_is_no_limit() -> None:
    bucket = TokenBucket(0)
    assert all(bucket.take() for _ in range(1000))
