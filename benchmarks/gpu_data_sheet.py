"""Data-sheet rates of common GPUs, against which the benchmarks state their figures."""

from __future__ import annotations

# Dense bf16 tensor-core peak (TFLOP/s) and memory bandwidth (TB/s). A device takes the first
# entry whose key is part of its CUDA name, so the more specific keys come first ("A100" before
# "A10", "H100 PCIe" and "H100 NVL" before the SXM part's "H100").
DATA_SHEET: dict[str, tuple[float, float]] = {
    "H100 PCIe": (756.0, 2.0),
    "H100 NVL": (835.0, 3.9),
    "H100": (989.0, 3.35),
    "H200": (989.0, 4.8),
    "A100": (312.0, 2.04),
    "L40S": (362.0, 0.864),
    "A10": (125.0, 0.6),
}


def data_sheet(name: str) -> tuple[float, float] | None:
    """(peak TFLOP/s, TB/s) of the device called `name`, if the table knows it."""
    return next((rates for key, rates in DATA_SHEET.items() if key in name), None)
