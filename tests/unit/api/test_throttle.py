"""The failed-authentication throttle on a virtual clock: a window, a block, and its end."""

from __future__ import annotations

from suanli.api.throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _app(scope: object, receive: object, send: object) -> None:  # never called here
    raise AssertionError("not reached")


def test_more_failures_than_allowed_within_the_window_block_the_address() -> None:
    clock = Clock()
    throttle = AuthThrottle(_app, max_failures=3, window_s=10.0, block_s=30.0, clock=clock)
    for _ in range(3):
        throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 0.0  # exactly the allowance: still served
    throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 30.0
    assert throttle.blocked_for("10.0.0.2") == 0.0  # another address is unaffected
    clock.now += 29.5
    assert throttle.blocked_for("10.0.0.1") == 0.5
    clock.now += 0.5
    assert throttle.blocked_for("10.0.0.1") == 0.0  # the block ends; the count starts again
    for _ in range(3):
        throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 0.0


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    throttle = AuthThrottle(_app, max_failures=3, window_s=10.0, block_s=30.0, clock=clock)
    for _ in range(3):
        throttle.failed("10.0.0.1")
        clock.now += 4.0  # 4 failures over 12 s: never more than 3 within 10 s
    throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") == 0.0
