"""The one GPU probe: NVML readings for a set of GPUs. No GPU or no NVML means no readings and
no errors. Replicas probe the GPUs Ray assigned them (``assigned``); the benchmark probes
every visible GPU (``visible``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization_pct: float
    memory_used_mb: float


class GpuProbe:
    def __init__(self, indices: list[int]) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        if not indices:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except Exception:  # no driver, no NVML, no such device: a probe that reads nothing
            self._nvml, self._handles = None, []

    @classmethod
    def assigned(cls) -> GpuProbe:
        """The GPUs Ray assigned to this process (a replica)."""
        try:
            import ray

            return cls([int(i) for i in ray.get_gpu_ids()])
        except Exception:
            return cls([])

    @classmethod
    def visible(cls) -> GpuProbe:
        try:
            import pynvml

            pynvml.nvmlInit()
            return cls(list(range(pynvml.nvmlDeviceGetCount())))
        except Exception:
            return cls([])

    @property
    def name(self) -> str | None:
        """The first probed GPU's model name; ``None`` without a GPU."""
        if not self._handles:
            return None
        return str(self._nvml.nvmlDeviceGetName(self._handles[0][1]))

    def read(self) -> list[GpuReading]:
        out = []
        for i, h in self._handles:
            try:
                out.append(
                    GpuReading(
                        index=i,
                        name=str(self._nvml.nvmlDeviceGetName(h)),
                        utilization_pct=float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        memory_used_mb=self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
                    )
                )
            except Exception:  # a reading that fails is skipped, never fatal
                continue
        return out
