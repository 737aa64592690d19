"""The transition-matrix loss: the paper's Appendix B identity, KL properties, alignment for both
callers, robustness to N / padding / empty rows, and MergeDNA's optional auxiliary term."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.transition_loss import (
    empirical_transition_counts,
    predicted_transition_counts,
    row_normalise,
    transition_kl,
    transition_matrix_loss,
    transition_pair_mask,
)
from megamerge.vocabulary import PAD, N, encode_tensor

pytestmark = pytest.mark.usefixtures("one_thread")

def _loop_bigrams(seq: str) -> torch.Tensor:
    """Row-normalised first-order transition matrix by counting, skipping pairs touching N / '-'."""
    counts = torch.zeros(4, 4, dtype=torch.float64)
    for a, b in itertools.pairwise(seq):
        if a in "ACGT" and b in "ACGT":
            counts["ACGT".index(a), "ACGT".index(b)] += 1
    rows = counts.sum(1, keepdim=True)
    return torch.where(rows > 0, counts / rows.clamp_min(1), torch.zeros_like(counts))


def _reference_loss(logits: torch.Tensor, seqs: list[str], next_token: bool) -> float:
    """An independent, loop-based implementation of the definition in the issue."""
    kls = []
    for b, seq in enumerate(seqs):
        probs = torch.softmax(logits[b].double(), -1)
        if next_token:  # logits[t] describes base t + 1
            probs, seq = probs[:-1], seq[1:]
        q = torch.zeros(4, 4, dtype=torch.float64)
        for t in range(len(seq) - 1):
            if seq[t] in "ACGT" and seq[t + 1] in "ACGT":
                q += torch.outer(probs[t], probs[t + 1])
        p = _loop_bigrams(seq)
        if p.sum() == 0:
            continue
        q = q / q.sum(1, keepdim=True)
        kls.append(sum(p[i, j] * math.log(p[i, j] / q[i, j])
                       for i in range(4) for j in range(4) if p[i, j] > 0))
    return sum(kls) / max(len(kls), 1)


def _ids(seqs: list[str]) -> torch.Tensor:
    """Right-pad with PAD ('-' in the strings)."""
    width = max(map(len, seqs))
    rows = [torch.cat((encode_tensor(s.replace("-", "")),
                       torch.full((width - len(s.replace("-", "")),), PAD)))
            for s in seqs]
    return torch.stack(rows)


SEQS = ["ACGTTGCAAAGGNNNCCTAGA--", "GGGGGGCGCGCGATATNATAAT", "TTTTACG----------------"]


def test_one_hot_probabilities_give_the_empirical_bigram_matrix():
    """The paper's Appendix B: with P_t one-hot, q is exactly the row-normalised bigram counts."""
    ids = _ids(SEQS)
    pairs = transition_pair_mask(ids)
    one_hot = F.one_hot(ids.clamp(max=3), 4).float()  # N/PAD rows are arbitrary: their pairs are masked
    q = row_normalise(predicted_transition_counts(one_hot, pairs))
    p = row_normalise(empirical_transition_counts(ids, pairs))
    for b, seq in enumerate(SEQS):
        expected = _loop_bigrams(seq).float()
        assert torch.allclose(q[b], expected, atol=1e-7), (seq, q[b], expected)
        assert torch.allclose(p[b], expected, atol=1e-7)


def test_pairs_touching_n_or_padding_are_excluded():
    ids = _ids(["ACNGT--"])
    assert transition_pair_mask(ids).tolist() == [[True, False, False, True, False, False]]
    counts = empirical_transition_counts(ids, transition_pair_mask(ids))[0]
    assert counts.sum() == 2 and counts[0, 1] == 1 and counts[2, 3] == 1


def test_kl_is_zero_when_q_equals_p_and_positive_otherwise():
    ids = _ids(SEQS)
    # Logits that are one-hot to float32 precision make q == p, so the loss is (numerically) 0,
    # in both alignments.
    sharp = 1e4 * F.one_hot(ids.clamp(max=3), 4).float()
    assert transition_matrix_loss(sharp, ids).abs() < 1e-6
    shifted = torch.roll(sharp, -1, dims=1)  # logits[t] now describes base t + 1
    assert transition_matrix_loss(shifted, ids, next_token=True).abs() < 1e-6

    p = row_normalise(torch.rand(5, 4, 4))
    p[1, 2] = 0  # an empty row
    assert torch.equal(transition_kl(p, p), torch.zeros(5))
    q = row_normalise(torch.rand(5, 4, 4))
    assert (transition_kl(p, q) > 0).all()


@pytest.mark.parametrize("next_token", [False, True])
def test_matches_a_loop_reference_of_the_definition(next_token):
    ids = _ids(SEQS)
    logits = torch.randn(*ids.shape, 4, generator=torch.Generator().manual_seed(0)) * 2
    got = transition_matrix_loss(logits, ids, next_token=next_token)
    assert abs(got.item() - _reference_loss(logits, SEQS, next_token)) < 1e-5


def test_next_token_alignment_is_a_shift():
    ids = _ids(SEQS)
    logits = torch.randn(*ids.shape, 4)
    assert torch.allclose(transition_matrix_loss(logits, ids, next_token=True),
                          transition_matrix_loss(logits[:, :-1], ids[:, 1:]))


def test_finite_with_missing_bases_all_n_rows_and_unobserved_transitions():
    logits = torch.randn(4, 20, 4, requires_grad=True)
    ids = torch.randint(0, 4, (4, 20))
    ids[0] = N  # all-N sequence: no pairs at all, excluded from the mean
    ids[1, ::2] = N  # every pair touches an N
    ids[2] = 0  # only the A row of p is observed: the other three rows are empty
    ids[3, 15:] = PAD
    loss = transition_matrix_loss(logits, ids)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() == 0  # nothing scored
    # The loss is the mean over the two scorable rows only.
    alone = [transition_matrix_loss(logits[i:i + 1].detach(), ids[i:i + 1]) for i in (2, 3)]
    assert torch.allclose(loss.detach(), (alone[0] + alone[1]) / 2)


def test_all_n_batch_gives_zero_that_still_backpropagates():
    logits = torch.randn(2, 10, 4, requires_grad=True)
    loss = transition_matrix_loss(logits, torch.full((2, 10), N))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # A single base has no pair either.
    assert transition_matrix_loss(torch.randn(1, 1, 4), torch.zeros(1, 1, dtype=torch.long)).item() == 0.0


def test_gradient_descent_on_free_logits_reaches_the_empirical_matrix():
    ids = _ids(["ACGTTGCAAAGGTCCTAGATTACA"])
    logits = torch.zeros(*ids.shape, 4, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    start = transition_matrix_loss(logits, ids).item()
    for _ in range(300):
        opt.zero_grad()
        loss = transition_matrix_loss(logits, ids)
        loss.backward()
        opt.step()
    assert start > 0.1 and loss.item() < 0.01 * start, (start, loss.item())


def test_rejects_logits_over_the_wrong_classes():
    with pytest.raises(ValueError, match="4 classes"):
        transition_matrix_loss(torch.randn(1, 5, 7), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="do not match"):
        transition_matrix_loss(torch.randn(1, 5, 4), torch.zeros(1, 6, dtype=torch.long))


def test_mergedna_tm_weight_adds_a_finite_tm_term():
    torch.manual_seed(0)
    ids = torch.randint(0, 4, (2, 128), generator=torch.Generator().manual_seed(1))
    ids[1, 40:60] = N
    model = MergeDNA(MergeDNAConfig.from_preset("tiny", tm_weight=0.5)).train()
    out = model.compute_losses(ids)
    assert torch.isfinite(out["tm"]) and out["tm"] > 0
    expected = out["mtr"] + 0.25 * out["latent_mtr"] + out["amtm"] + 0.5 * out["tm"]
    assert torch.allclose(out["loss"], expected)
    model.zero_grad(set_to_none=True)
    out["tm"].backward()
    head = model.local_decoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())

    plain = MergeDNA(MergeDNAConfig.from_preset("tiny")).train().compute_losses(ids)
    assert "tm" not in plain  # default tm_weight = 0: no extra term, no extra cost
