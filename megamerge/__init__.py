"""megamerge: cluster-scale pre-training of DNA foundation models."""

__version__ = "0.1.0"

from .portable import load_portable as from_pretrained  # after __version__, which portable reads

__all__ = ["__version__", "from_pretrained"]
