"""The step-load plan: which user counts to run and for how long. Locust-free, so the capacity
CLI can build it without importing Locust (which monkey-patches the process with gevent).

The plan travels to the Locust process in environment variables; ``load/shapes.py`` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

STEPS_ENV = "FUNASR_LOAD_STEPS"
"""Comma-separated, strictly increasing user counts, e.g. ``1,2,4,8``."""
STEP_TIME_ENV = "FUNASR_LOAD_STEP_TIME_S"
"""Seconds spent at each user count."""


@dataclass(frozen=True)
class StepPlan:
    """User counts held for ``step_time_s`` seconds each, in order."""

    users: tuple[int, ...]
    step_time_s: float

    def __post_init__(self) -> None:
        if not self.users or any(u < 1 for u in self.users):
            raise ValueError(f"user counts must be >= 1; got {self.users}")
        # The report tells steps apart by user count, so a count may not repeat.
        if any(b <= a for a, b in zip(self.users, self.users[1:], strict=False)):
            raise ValueError(f"user counts must strictly increase; got {self.users}")
        if self.step_time_s <= 0:
            raise ValueError(f"step time must be positive; got {self.step_time_s}")

    @property
    def duration_s(self) -> float:
        return len(self.users) * self.step_time_s

    @classmethod
    def ramp(cls, max_users: int, step_users: int, step_time_s: float) -> StepPlan:
        """1, then multiples of ``step_users`` up to ``max_users``; ``step_users=0`` doubles
        (1, 2, 4, 8, ...). ``max_users`` is always the last step."""
        if max_users < 1:
            raise ValueError("max_users must be >= 1")
        if step_users < 0:
            raise ValueError("step_users must be >= 0")
        if step_users == 0:
            users = [1]
            while users[-1] * 2 < max_users:
                users.append(users[-1] * 2)
        else:
            users = [1, *range(step_users, max_users, step_users)]
        users = sorted(set(users) - {max_users}) + [max_users]
        return cls(tuple(users), step_time_s)

    def to_env(self) -> dict[str, str]:
        return {STEPS_ENV: ",".join(map(str, self.users)), STEP_TIME_ENV: f"{self.step_time_s:g}"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StepPlan:
        env = os.environ if environ is None else environ
        if STEPS_ENV not in env or STEP_TIME_ENV not in env:
            raise KeyError(f"set {STEPS_ENV} and {STEP_TIME_ENV} (python -m load.capacity does)")
        users = tuple(int(u) for u in env[STEPS_ENV].split(",") if u.strip())
        return cls(users, float(env[STEP_TIME_ENV]))
