"""Pipeline carries: a dataclass of tensors (nested dataclasses and None allowed) <-> the flat tuple
of tensors that DeepSpeed's pipeline engine sends between stages, and the same state sent point
to point outside the engine (a family's no-grad previews).

The engine gives every floating-point tensor it receives a gradient and waits for it in the
backward pass, so float tensors that carry none (positions, sizes, loss weights) travel bit-cast
to int32, and bool masks as uint8 (the engine has no bool flag). The first tensor of the tuple
holds one code per leaf, so the receiver rebuilds the dataclass with no schema of its own beyond
its type; a leaf that is None is absent from the tuple. A field whose metadata says
{"carried": False} (derived state, cheaper to recompute than to send) is left at its default by
the next stage, and kept by the next layer of the same stage (`to_tuple`).
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import torch
import torch.distributed as dist

from megamerge.models.common.batch import to_device

ABSENT, AS_IS, FLOAT_BITS, BOOL_BYTES = 0, 1, 2, 3
# Point-to-point sends name dtypes by index.
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.uint8)


@functools.cache
def _fields(cls: type) -> list[tuple[str, type | None, bool]]:
    """(name, nested dataclass type or None for a leaf, carried) for each field of `cls`, in order."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        nested = [t for t in typing.get_args(hints[field.name]) or (hints[field.name],)
                  if dataclasses.is_dataclass(t)]
        out.append((field.name, nested[0] if nested else None, field.metadata.get("carried", True)))
    return out


def _leaves(obj, cls: type, carried: bool = True) -> list:
    """The values of `obj`'s carried leaves (tensors or None), or with carried=False of its derived
    ones, in field order through nested dataclasses (a derived nested dataclass is neither)."""
    out = []
    for name, nested, is_carried in _fields(cls):
        value = None if obj is None else getattr(obj, name)
        if nested is not None:
            out += _leaves(value, nested, carried) if is_carried else []
        elif is_carried == carried:
            out.append(value)
    return out


def _rebuild(cls: type, leaves: typing.Iterator, derived: typing.Iterator | None):
    """`cls` from its carried leaves and, where known (`derived`), its derived fields; None when
    no carried leaf is present."""
    values, present = {}, False
    for name, nested, is_carried in _fields(cls):
        if not is_carried:
            if nested is None and derived is not None:
                values[name] = next(derived)
            continue
        values[name] = _rebuild(nested, leaves, derived) if nested is not None else next(leaves)
        present |= values[name] is not None
    return cls(**values) if present else None


def _encode(t: torch.Tensor | None) -> tuple[int, torch.Tensor | None]:
    if t is None:
        return ABSENT, None
    if t.dtype == torch.bool:
        return BOOL_BYTES, t.to(torch.uint8)
    if t.is_floating_point() and not t.requires_grad:
        return FLOAT_BITS, t.float().contiguous().view(torch.int32)
    return AS_IS, t


def _decode(code: int, t: torch.Tensor | None) -> torch.Tensor | None:
    if code == ABSENT:
        return None
    if code == BOOL_BYTES:
        return t.bool()
    if code == FLOAT_BITS:
        return t.contiguous().view(torch.float32)
    return t


def to_tuple(obj) -> tuple[torch.Tensor, ...]:
    """(codes [n leaves] uint8, *the present leaves encoded) for the dataclass `obj`."""
    encoded = [_encode(t) for t in _leaves(obj, type(obj))]
    codes = [code for code, _ in encoded]
    device = next((t.device for _, t in encoded if t is not None), torch.device("cpu"))
    codes_tensor = to_device(torch.tensor(codes, dtype=torch.uint8), device)
    # Between two layers of one stage the engine hands this tuple on as it is: the codes and the
    # derived fields ride on the codes tensor, so the next layer neither reads the codes back from
    # the device (a host sync) nor recomputes the derived state. A tuple received from another
    # stage (or re-made by checkpointing) is a new tensor without them.
    codes_tensor.within_stage = (codes, _leaves(obj, type(obj), carried=False))
    return (codes_tensor, *(t for _, t in encoded if t is not None))


def from_tuple(cls: type, carried: tuple[torch.Tensor, ...]):
    within_stage = getattr(carried[0], "within_stage", None)
    codes, derived = within_stage if within_stage is not None else (carried[0].tolist(), None)
    tensors = iter(carried[1:])
    leaves = iter([_decode(code, None if code == ABSENT else next(tensors)) for code in codes])
    return _rebuild(cls, leaves, None if derived is None else iter(derived))


def send(obj, dst: int) -> None:
    """`obj` to global rank `dst` (dist.send): a header of codes, dtypes and shapes, then the tensors."""
    carried = to_tuple(obj)
    tensors = carried[1:]
    codes = carried[0].within_stage[0]
    header = [len(codes), *codes, len(tensors)]
    for t in tensors:
        header += [DTYPES.index(t.dtype), t.dim(), *t.shape]
    device = carried[0].device
    dist.send(torch.tensor([len(header)], dtype=torch.long, device=device), dst)
    dist.send(torch.tensor(header, dtype=torch.long, device=device), dst)
    for t in tensors:
        dist.send(t.detach().contiguous(), dst)


def recv(cls: type, src: int, device: torch.device):
    """What `send` sent from global rank `src`, as a `cls` on `device`."""
    size = torch.empty(1, dtype=torch.long, device=device)
    dist.recv(size, src)
    header = torch.empty(int(size), dtype=torch.long, device=device)
    dist.recv(header, src)
    values = iter(header.tolist())
    codes = [next(values) for _ in range(next(values))]
    tensors = []
    for _ in range(next(values)):
        dtype, ndim = DTYPES[next(values)], next(values)
        t = torch.empty(*[next(values) for _ in range(ndim)], dtype=dtype, device=device)
        dist.recv(t, src)
        tensors.append(t)
    return from_tuple(cls, (torch.tensor(codes, dtype=torch.uint8), *tensors))
