"""Pre-training around DeepSpeed. Read trainer.py first: `Trainer` is the loop, one method per job.

Around it, one concern per file: arguments.py (the flags), ds_config.py (the DeepSpeed config,
checked and filled from the flags), model_from_flags.py (the model config and layout checks),
engine.py (the DeepSpeed engine, also used by the portable -> DeepSpeed converter), objective.py
(the module the engine wraps), batches.py (what each micro-step reads; --mock-data's sequences
come from megamerge/data/mock_data.py), input_checks.py (the flags and inputs refused before
DeepSpeed starts), peak_flops.py (MFU's denominator),
run_state.py and checkpointing.py (what a checkpoint holds, written atomically), evaluation.py,
metrics.py (metrics.jsonl, TensorBoard, the progress line), grad_norms.py (the gradient norms of
a family's parameter groups, such as MergeDNA's merge scorers, for metrics.jsonl), lr_schedule.py,
signals.py (stop requests), distributed.py (process-group start-up) and activation_checkpointing.py."""
