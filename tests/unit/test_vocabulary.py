import numpy as np
import pytest
import torch

from megamerge import vocabulary as tok


def test_round_trip_and_lower_case():
    ids = tok.encode("ACGTNacgtn")
    assert ids.dtype == np.uint8
    assert ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert tok.decode(ids) == "ACGTNACGTN"
    assert tok.encode(b"GATTACA").tolist() == tok.encode("gattaca").tolist()


@pytest.mark.parametrize("text,char,offset", [("ACGTX", "X", 4), ("AC GT", " ", 2), ("R", "R", 0)])
def test_invalid_character_names_char_and_offset(text, char, offset):
    with pytest.raises(ValueError, match=rf"{char!r} at offset {offset}"):
        tok.encode(text)


def test_reverse_complement_and_targets():
    ids = tok.encode_tensor("AACGTN")
    assert tok.decode(tok.reverse_complement(ids)) == "NACGTT"
    padded = torch.tensor([0, 3, tok.N, tok.PAD, tok.MASK])
    assert tok.base_targets(padded).tolist() == [0, 3, -100, -100, -100]


def test_encode_is_vectorised_on_long_input():
    seq = "ACGT" * 250_000
    assert tok.encode(seq).shape == (1_000_000,)
