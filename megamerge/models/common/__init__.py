"""Parts both model families use: the Transformer block (block.py) with its attention (attention.py,
local_attention.py for exact windowed attention on CPU), RMSNorm (norm.py), RoPE (rope.py), the
base cross-entropy (losses.py), the transition-matrix loss (transition_loss.py) and counter-based
random draws keyed by sample (keyed_random.py)."""
