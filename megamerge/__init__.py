"""megamerge: cluster-scale pre-training of DNA foundation models."""

from megamerge.version import __version__

__all__ = ["__version__", "from_pretrained"]


def __getattr__(name: str):
    # `from_pretrained` needs torch, which takes ~2 s of CPU to import. Importing it lazily lets
    # torch-free tools (data_prep/prepare.py reads only __version__) start in a fraction of that.
    if name == "from_pretrained":
        from .portable import load_portable

        return load_portable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
