"""Prometheus metrics beyond Serve's built-ins, exported through Ray's metrics endpoint
(start Ray with ``--metrics-export-port``; see README). Names get Ray's ``ray_`` prefix."""

from __future__ import annotations

from functools import cache
from typing import Any

from ray.serve import metrics

from serve_app.gpu import GpuProbe

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


def record_gpus(probe: GpuProbe) -> None:
    """Export the probe's readings (nothing without a GPU)."""
    for r in probe.read():
        asr_metrics()["gpu_mem"].set(r.memory_used_mb * 2**20, tags={"gpu": str(r.index)})
        asr_metrics()["gpu_util"].set(r.utilization_pct, tags={"gpu": str(r.index)})
