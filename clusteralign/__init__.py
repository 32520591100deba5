"""ClusterAlign ReID: cluster-level feature alignment for person re-identification."""

__version__ = "0.1.0"
