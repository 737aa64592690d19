"""Read DeepSpeed's checkpoint files without unrestricted unpickling.

DeepSpeed writes pickles, so they cannot be avoided on the way in; they are read with
`torch.load(weights_only=True)`, which only rebuilds tensors, containers and primitive types.
A megamerge checkpoint holds a few more classes, and exactly these are allow-listed (for this one
load, with the `safe_globals` context manager, not process-wide):

* numpy's array reconstruction and dtypes: the per-rank RNG state (`np.random.get_state()`) that
  megamerge stores in `client_state["rank_states"]` for exact resume;
* `LossScaler`, `ZeroStageEnum`, `fragment_address`: plain data records in DeepSpeed's ZeRO
  optimizer state (loss-scale settings, the stage number, where each parameter's slice lies in a
  rank's flat fp32 partition).

None of these runs code on construction beyond setting attributes. Any other global is refused
and reported, instead of falling back to `weights_only=False`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import ConversionError


def _allowed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    numpy_types = [np._core.multiarray._reconstruct, np.ndarray, np.dtype]
    # np.random.get_state() stores its key as uint32; numpy >= 1.25 pickles the dtype by class.
    numpy_types += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.uint8)]
    return [*numpy_types, LossScaler, ZeroStageEnum, fragment_address]


def load_deepspeed_file(path: str | Path) -> dict:
    """One DeepSpeed checkpoint file as a dict, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: missing checkpoint shard")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except torch.serialization.pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)|got <class '(\S+)'>", str(e))
        what = next((g for g in found.groups() if g), "an unknown class") if found else "an unknown class"
        raise ConversionError(f"{path}: refusing to unpickle {what}, which is not on megamerge's "
                              "allow-list of DeepSpeed checkpoint classes (was this file written by "
                              "megamerge?)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        text = str(e).strip()
        reason = text.splitlines()[0].split(". ")[0][:160] if text else type(e).__name__
        raise ConversionError(f"{path}: truncated or corrupt checkpoint file ({reason})") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a dict, found {type(state).__name__}: "
                              "not a DeepSpeed checkpoint file")
    return state
