"""The exported tokenizer: a `tokenizers` tokenizer.json that AutoTokenizer loads without remote
code, built from megamerge.vocabulary's ids (one base per token, lower case folded to upper, PAD
and MASK as special tokens, no special token added to a sequence), so
`tokenizer(seqs, padding=True)["input_ids"]` is megamerge's encoding, right-padded with PAD."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from megamerge.vocabulary import ALPHABET, MASK, PAD, VOCAB_SIZE

PAD_TOKEN, MASK_TOKEN = "[PAD]", "[MASK]"


def vocabulary() -> dict[str, int]:
    vocab = {base: i for i, base in enumerate(ALPHABET)}
    vocab.update({PAD_TOKEN: PAD, MASK_TOKEN: MASK})
    if sorted(vocab.values()) != list(range(VOCAB_SIZE)):
        raise AssertionError(f"tokenizer vocabulary {vocab} does not cover megamerge's {VOCAB_SIZE} ids")
    return vocab


def build_tokenizer() -> Tokenizer:
    # No unk token: a character outside A C G T N (any case) is an error, as in vocabulary.encode.
    tokenizer = Tokenizer(WordLevel(vocabulary()))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(b.lower(), b) for b in ALPHABET])
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # "ACGT", not "A C G T"
    tokenizer.add_special_tokens([PAD_TOKEN, MASK_TOKEN])
    return tokenizer


def write_tokenizer(out_dir: str | Path, max_length: int) -> None:
    out = Path(out_dir)
    build_tokenizer().save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": PAD_TOKEN,
        "mask_token": MASK_TOKEN,
        "padding_side": "right",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    special = {"pad_token": PAD_TOKEN, "mask_token": MASK_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n")
