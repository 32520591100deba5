"""ClusterAlign ReID: cluster-level feature alignment for person re-identification."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "__version__"]

if TYPE_CHECKING:
    from .infer.extractor import FeatureExtractor


def __getattr__(name: str) -> Any:
    # Imported on first use: the Snakefile's planning imports this package, and torch would add
    # seconds to every Snakemake start.
    if name == "FeatureExtractor":
        from .infer.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
