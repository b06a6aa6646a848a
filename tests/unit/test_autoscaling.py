"""The queued-audio autoscaling policy as a function of Serve's AutoscalingContext."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from serve_app.autoscaling import QUEUED_AUDIO_METRIC, QueuedAudioPolicy, desired_replicas


@dataclass
class Ctx:
    queued: list[float]
    target_num_replicas: int = 1
    policy_state: dict[str, Any] = field(default_factory=dict)
    capacity_adjusted_min_replicas: int = 1
    capacity_adjusted_max_replicas: int = 4

    @property
    def aggregated_metrics(self) -> Any:
        # Serve passes a lazy callable: the policy must accept that.
        return lambda: {QUEUED_AUDIO_METRIC: {f"r{i}": q for i, q in enumerate(self.queued)}}


def test_desired_replicas_by_audio_seconds() -> None:
    assert desired_replicas(0, 100, 1, 4) == 1
    assert desired_replicas(250, 100, 1, 4) == 3
    assert desired_replicas(10_000, 100, 1, 4) == 4
    # One long file counts for its audio, not as "one request".
    assert desired_replicas(300, 100, 1, 8) == 3


@pytest.mark.parametrize(
    ("queued", "current", "want"),
    [([350.0], 1, 4), ([120.0, 90.0], 2, 3), ([0.0, 0.0], 4, 1), ([50.0], 3, 1), ([1e6], 1, 4)],
)
def test_policy_sums_replicas_and_clamps(queued: list[float], current: int, want: int) -> None:
    policy = QueuedAudioPolicy(target_queued_audio_s=100)
    n, state = policy(Ctx(queued=queued, target_num_replicas=current, policy_state={"keep": 1}))
    assert n == want
    assert state == {"keep": 1}, "Serve's own delay bookkeeping must pass through untouched"


def test_missing_metric_means_minimum() -> None:
    ctx = Ctx(queued=[])
    assert QueuedAudioPolicy()(ctx)[0] == 1


def test_target_must_be_positive() -> None:
    with pytest.raises(ValueError):
        QueuedAudioPolicy(target_queued_audio_s=0)
