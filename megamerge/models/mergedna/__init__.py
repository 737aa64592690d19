"""MergeDNA (arXiv 2511.14806), the hierarchical model that learns its own tokenizer.

Read first: model.py (the four parts and `compute_losses`), objective.py (the pieces of the
three-pass objective that the unsplit model and the pipeline stages share), token_merging.py
(merging with integer maps). config.py holds the presets; local_encoder.py, latent_encoder.py,
latent_decoder.py and local_decoder.py the four parts; masking.py the AMTM draw; flops.py the
FLOP count for MFU; pipeline_layers.py the ordered pipeline layers; spec.py the registry entry.
"""
