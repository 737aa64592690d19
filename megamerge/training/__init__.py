"""Pre-training machinery around DeepSpeed: flags, config validation, schedule, checkpoints, logs."""
