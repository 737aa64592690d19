"""Peak dense bf16 FLOP/s of a device, the denominator of MFU (any model family)."""

from __future__ import annotations

# Dense bf16 tensor-core TFLOP/s (SXM parts; the H200 has the H100's compute).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_flops_per_device(override_tflops: float | None, device_name: str | None) -> float | None:
    """Peak dense FLOP/s: --peak-tflops if given, else by GPU name; None (MFU null) on CPU."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device_name:
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in device_name:
                return tflops * 1e12
    return None
