"""CARMANIA (arXiv 2507.09378): a LLaMA-style sliding-window decoder over single bases, trained with
next-token cross-entropy plus the transition-matrix loss.

config.py holds the presets; model.py the model and its losses; kv_cache.py and generation.py
sampling with a sliding-window cache; flops.py the FLOP count for MFU; spec.py the registry entry.
"""
