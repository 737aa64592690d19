"""Offline conversion between megamerge's DeepSpeed checkpoints and the portable format, for both
model families (MergeDNA, CARMANIA; the family is stored in the checkpoint and in config.json).

    to_portable.py      any ZeRO<=2 / TP / PP / DP checkpoint -> model.safetensors + config.json
    from_portable.py    portable -> a weights-only DeepSpeed checkpoint at any TP / PP
    safe_load.py        reading DeepSpeed's pickles with an explicit allow-list
    discovery.py        the files of one checkpoint tag and the missing-shard check
    zero_master.py      fp32 master weights from ZeRO partitions
    parameter_names.py  DeepSpeed / pipeline names -> the bare model's names
    tensor_parallel_join.py   joining TP shards (by megamerge.parallel.tensor_parallel_plan)
    staging.py          all-or-nothing output directories
"""

from .errors import ConversionError

__all__ = ["ConversionError"]
