"""The fp32 master weights of one model-parallel rank, rebuilt from its ZeRO-1/2 partitions.

Under ZeRO stages 1 and 2 (and DeepSpeed's BF16_Optimizer, which bf16 + ZeRO-1 uses) each data-
parallel rank holds one contiguous slice of every parameter group's flat fp32 buffer
(`single_partition_of_fp32_groups`). These are the weights the optimizer updates; the bf16
module copies in `mp_rank_XX_model_states.pt` are rounded from them and must not be used.

Each rank's optimizer file also records `param_slice_mappings`: for every parameter with
elements in that rank's slice, where they start in the slice and how many there are. Because
slices are contiguous pieces of one flat buffer, a parameter's fragments read in data-parallel
rank order are its flattened elements in order. This is the record DeepSpeed's universal
checkpointing relies on; it makes the reconstruction independent of the alignment padding rules,
which differ between optimizers and DeepSpeed versions.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import ConversionError
from .safe_load import load_deepspeed_file


def optimizer_partition(path: Path) -> tuple[list[torch.Tensor], list[dict], dict]:
    """(flat fp32 partitions per group, slice mappings per group, facts) of one optimizer file."""
    state = load_deepspeed_file(path)
    osd = state.get("optimizer_state_dict")
    if not isinstance(osd, dict) or "single_partition_of_fp32_groups" not in osd:
        raise ConversionError(f"{path}: no ZeRO-1/2 fp32 partitions (single_partition_of_fp32_groups); "
                              "megamerge converts checkpoints of ZeRO stage 1 or 2")
    if "param_slice_mappings" not in osd:
        raise ConversionError(f"{path}: no param_slice_mappings (written by DeepSpeed "
                              f"{osd.get('ds_version')}, older than 0.10); convert with that DeepSpeed's "
                              "zero_to_fp32.py first")
    stage = osd.get("zero_stage")
    facts = {"zero_stage": int(stage) if stage is not None else 1,  # BF16_Optimizer = ZeRO-1 semantics
             "optimizer": "BF16_Optimizer" if stage is None else "DeepSpeedZeroOptimizer",
             "ds_version": state.get("ds_version")}
    return osd["single_partition_of_fp32_groups"], osd["param_slice_mappings"], facts


def merge_master_weights(param_shapes: list[dict], optim_files: list[Path], where: str
                         ) -> tuple[dict[str, torch.Tensor], dict]:
    """{DeepSpeed parameter name: full fp32 tensor} from the files of data-parallel ranks 0..dp-1."""
    fragments: dict[str, list[torch.Tensor]] = {name: [] for group in param_shapes for name in group}
    facts = None
    for dp_rank, path in enumerate(optim_files):
        partitions, mappings, file_facts = optimizer_partition(path)
        facts = facts or file_facts
        if len(partitions) != len(param_shapes):
            raise ConversionError(f"{path}: {len(partitions)} parameter groups, but the model states of "
                                  f"{where} declare {len(param_shapes)}")
        for flat, mapping in zip(partitions, mappings):
            for name, address in mapping.items():
                if name not in fragments:
                    raise ConversionError(f"{path}: optimizer holds {name!r}, which the model states of "
                                          f"{where} do not declare")
                if address.start + address.numel > flat.numel():
                    raise ConversionError(f"{path}: the slice of {name!r} runs past the end of the partition "
                                          "(truncated or corrupt file)")
                fragments[name].append(flat.narrow(0, address.start, address.numel))
    weights = {}
    for group in param_shapes:
        for name, shape in group.items():
            shape = tuple(shape)
            parts = fragments[name]
            numel = sum(p.numel() for p in parts)
            if numel != math.prod(shape):
                raise ConversionError(f"{where}: {name!r} has {numel} elements over {len(optim_files)} "
                                      f"optimizer partition(s) but shape {list(shape)} needs "
                                      f"{math.prod(shape)}: a partition is missing or from "
                                      "another checkpoint")
            weights[name] = torch.cat(parts).view(shape).to(torch.float32).clone()
    return weights, facts
