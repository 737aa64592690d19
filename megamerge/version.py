"""The package version, in a module that imports nothing (portable.py and data_prep read it
without importing the package's torch-using parts)."""

__version__ = "0.1.0"
