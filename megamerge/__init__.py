"""megamerge: cluster-scale pre-training of DNA foundation models."""

__version__ = "0.1.0"
