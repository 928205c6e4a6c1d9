"""Driving the generator forms of the analyses (they yield progress, then return a result)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

Result = TypeVar("Result")


def run_steps(steps: Generator[Any, None, Result],
              on_step: Callable[[Any], None] | None = None) -> Result:
    """Run a progress generator to its end and return its value, passing each step on."""
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_step is not None:
            on_step(step)
