"""Prometheus metrics beyond Serve's built-ins, exported through Ray's metrics endpoint
(start Ray with ``--metrics-export-port``; see README). Names get Ray's ``ray_`` prefix."""

from __future__ import annotations

from functools import cache
from typing import Any

from ray.serve import metrics

BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
SECONDS_BOUNDARIES = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0]
RTF_BOUNDARIES = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


@cache
def asr_metrics() -> dict[str, Any]:
    return {
        "received": metrics.Counter(
            "funasr_audio_seconds_received", "Audio seconds of speech segments received by ASR."
        ),
        "processed": metrics.Counter("funasr_audio_seconds_processed", "Audio seconds transcribed by ASR."),
        "rtf": metrics.Histogram(
            "funasr_request_rtf", "ASR wall time / audio seconds per request.", boundaries=RTF_BOUNDARIES
        ),
        "batch_size": metrics.Histogram(
            "funasr_asr_batch_size", "Segments per ASR forward pass.", boundaries=BATCH_BOUNDARIES
        ),
        "batch_audio": metrics.Histogram(
            "funasr_asr_batch_audio_seconds",
            "Audio seconds per ASR forward pass.",
            boundaries=SECONDS_BOUNDARIES,
        ),
        "queued": metrics.Gauge(
            "funasr_asr_queued_audio_seconds", "Audio seconds waiting in or running on this replica."
        ),
        "gpu_mem": metrics.Gauge(
            "funasr_gpu_memory_used_bytes",
            "GPU memory used on this replica's device (NVML).",
            tag_keys=("gpu",),
        ),
        "gpu_util": metrics.Gauge(
            "funasr_gpu_utilization_percent",
            "GPU utilisation of this replica's device (NVML).",
            tag_keys=("gpu",),
        ),
    }


@cache
def decode_failures() -> Any:
    return metrics.Counter(
        "funasr_decode_failures", "Uploads that could not be decoded, by error type.", tag_keys=("type",)
    )


class GpuProbe:
    """NVML readings for the GPUs Ray assigned this replica. No GPU or no NVML → no readings,
    no errors, and the GPU metrics are simply never set."""

    def __init__(self) -> None:
        self._handles: list[tuple[str, Any]] = []
        try:
            import pynvml
            import ray

            ids = [int(i) for i in ray.get_gpu_ids()]
            if not ids:
                return
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [(str(i), pynvml.nvmlDeviceGetHandleByIndex(i)) for i in ids]
        except Exception:
            self._handles = []

    def record(self) -> None:
        for gpu, h in self._handles:
            try:
                asr_metrics()["gpu_mem"].set(self._nvml.nvmlDeviceGetMemoryInfo(h).used, tags={"gpu": gpu})
                asr_metrics()["gpu_util"].set(
                    self._nvml.nvmlDeviceGetUtilizationRates(h).gpu, tags={"gpu": gpu}
                )
            except Exception:
                pass
