"""Supervised fine-tuning of portable megamerge models on genomic tasks (tools/finetune.py).

task_data.py     train/dev/test files -> checked, encoded splits; length-bucketed batches
heads.py         TaskModel: backbone + linear head; pooling; per-base states
adapters.py      lora / full / probe; LoRA through peft
build.py         a TaskModel from a run spec (before training and when loading back)
data_parallel.py ranks, disjoint shards of each global batch, gradient sums
loop.py          train, select the epoch on dev, score test once
metrics.py       scikit-learn metrics and the headline metric
results.py       results.json, OUT/seed<k>/ artifacts, load_finetuned
run.py           one run over several seeds (what tools/finetune.py calls)
suite.py         many tasks (tools/evaluate_suite.py)
"""
