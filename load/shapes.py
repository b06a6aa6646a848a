"""Step load for the capacity run. A separate locustfile so that it applies only when named:

    locust -f load/locustfile.py,load/shapes.py ...   (what ``python -m load.capacity`` runs)

while ``locust -f load/locustfile.py -u 4`` stays an ordinary fixed-user run. The plan comes from
the environment (``load.plan.StepPlan.to_env``).
"""

from __future__ import annotations

from locust import LoadTestShape

from load.plan import StepPlan

SPAWN_RATE = 100.0
"""Users started per second at a step change: effectively at once, so each step's history rows
carry a single user count (the report finds step boundaries from it)."""


class StepLoadShape(LoadTestShape):
    """Hold each user count of the plan for ``step_time_s`` seconds, then stop the test."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = StepPlan.from_env()

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.plan.step_time_s)
        if step >= len(self.plan.users):
            return None
        return self.plan.users[step], SPAWN_RATE
