"""Hugging Face interop: export a portable model as a `transformers` directory that loads without
megamerge (export.py), its modeling file generated from megamerge's own sources (inline_source.py)."""
