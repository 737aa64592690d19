"""megamerge/parallel/carry.py: a dataclass <-> the flat tuple of tensors the pipeline engine sends.
Between two layers of one stage the tuple is handed on as it is, and the derived ({"carried":
False}) fields and the leaf codes ride along, so the next layer reads nothing back from the device;
a tuple from another stage is new tensors, and the receiver recomputes the derived state."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from megamerge.parallel import carry

DERIVED = {"carried": False}


@dataclass
class Inner:
    x: torch.Tensor
    pos: torch.Tensor | None = None
    table: torch.Tensor | None = field(default=None, metadata=DERIVED)
    counts: tuple[int, ...] | None = field(default=None, metadata=DERIVED)


@dataclass
class Outer:
    ids: torch.Tensor
    mask: torch.Tensor
    first: Inner
    second: Inner | None = None
    width: int | None = field(default=None, metadata=DERIVED)


def _outer() -> Outer:
    x = torch.randn(2, 3, 4, requires_grad=True)
    inner = Inner(x * 2, torch.arange(6.).view(2, 3), table=torch.ones(2, 3), counts=(3, 2))
    return Outer(torch.arange(6).view(2, 3), torch.tensor([[True, False, True]] * 2), inner, width=7)


def _count_tolist(monkeypatch) -> list:
    calls, real = [], torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (calls.append(t.shape), real(t))[1])
    return calls


def test_within_a_stage_the_derived_fields_survive_and_nothing_is_read_back(monkeypatch):
    obj = _outer()
    carried = carry.to_tuple(obj)
    assert all(isinstance(t, torch.Tensor) for t in carried)
    assert carried[0].dtype == torch.uint8 and len(carried) == 1 + 4  # ids, mask, first.x, first.pos
    calls = _count_tolist(monkeypatch)
    back = carry.from_tuple(Outer, carried)
    assert calls == []
    assert back.width == 7 and back.first.counts == (3, 2) and back.first.table is obj.first.table
    assert back.second is None
    assert torch.equal(back.ids, obj.ids) and torch.equal(back.mask, obj.mask)
    assert back.mask.dtype == torch.bool
    assert torch.equal(back.first.pos, obj.first.pos) and back.first.pos.dtype == torch.float32
    assert back.first.x is obj.first.x  # with its gradient: the engine's backward reaches it


def test_from_another_stage_the_derived_fields_are_left_at_their_defaults(monkeypatch):
    obj = _outer()
    received = tuple(t.clone() for t in carry.to_tuple(obj))  # what a receiving stage holds: new tensors
    calls = _count_tolist(monkeypatch)
    back = carry.from_tuple(Outer, received)
    assert len(calls) == 1  # the codes, once
    assert back.width is None and back.first.table is None and back.first.counts is None
    assert torch.equal(back.first.x, obj.first.x) and torch.equal(back.first.pos, obj.first.pos)
    # a float with a gradient travels as it is; one without, bit-cast to int32, so that the engine
    # gives it no gradient
    assert received[3].dtype == torch.float32 and received[4].dtype == torch.int32
