"""Deadlines and retries in one place (tenacity): poll until something holds, or say what did not."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


class Timeout(Exception):
    """`until()` gave up; the caller turns it into an error that says what it waited for."""


def until(check: Callable[[], T], *, timeout: float, interval: float = 0.05) -> T:
    """Call `check` every `interval` seconds until it returns something truthy; return that.

    Raises `Timeout` after `timeout` seconds. An exception from `check` ends the wait at once.
    """
    retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                        retry=retry_if_result(lambda value: not value))  # fmt: skip
    try:
        return retrying(check)
    except RetryError:
        raise Timeout(f"not done after {timeout:g} s") from None
