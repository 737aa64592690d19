"""tools/estimate_memory.py: the analytic activation model against a saved-tensor census of real
forward passes, and the whole estimate against the measured peak RSS of a real CPU run."""

import re

import pytest

from benchmarks.activation_census import census
from benchmarks.bench_memory import RunConfig, estimated, measure
from megamerge.memory_estimate import check_sequence_parallel, estimate
from megamerge.memory_estimate.activations import Kernels, activation_estimate, block_bytes
from megamerge.models import MergeDNAConfig
from tools.estimate_memory import main as estimate_main

# deterministic token counts, as benchmarks/bench_memory.py runs them
FIXED = {"compression_range": (0.5, 0.5)}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("overrides", [{}, {"rotary_merge": False, "dim": 192, "n_heads": 6}],
                         ids=["tiny", "plain-merge-D192"])
def test_saved_activations_match_the_census(one_thread, checkpoint, overrides):
    cfg = MergeDNAConfig.from_preset("tiny", **FIXED, **overrides)
    micro, seq = 2, 300  # 300: not a multiple of the local-attention block, so padding is exercised
    counted = census(cfg, micro, seq, checkpoint)
    est = activation_estimate(cfg, micro, seq, 1, Kernels("cpu", 4), checkpoint)
    total = sum(counted.values())
    assert est.saved == pytest.approx(total, rel=0.10)
    # Every sizeable site on its own, so that errors cannot cancel out.
    for key, nbytes in counted.items():
        if nbytes > 0.02 * total:
            assert est.by_site.get(key, 0.0) == pytest.approx(nbytes, rel=0.10), key


def test_estimate_within_25_percent_of_measured_peak_rss():
    run = RunConfig("tiny", 2, 512, False)
    measured = measure(run, pinned=True)["peak_bytes"]
    assert measured > 100 * 2**20  # far above the warm-up's own peak, so the ratio means something
    assert 0.75 <= estimated(run)["total"] / measured <= 1.25


def test_local_attention_keeps_no_window_sized_state_on_either_device():
    """flash-attn and the blocked CPU kernel (which recomputes each chunk in backward) both keep
    O(tokens) state, so a wider window costs no saved activations; full attention never does."""
    narrow, wide = (MergeDNAConfig.from_preset("tiny", window=w) for w in (8, 64))
    for device in ("cpu", "gpu"):
        k = Kernels(device, 4)
        for local in (True, False):
            assert block_bytes(wide, 4096, 1, local, k) == block_bytes(narrow, 4096, 1, local, k), (
                device, local)


def test_cli_prints_every_term(capsys):
    assert estimate_main(["--model", "380m", "--zero", "2", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    rows = {line.rsplit(None, 2)[0].strip(): float(line.split()[-2]) for line in out.splitlines()
            if line.endswith(" GiB")}
    assert rows["parameters"] == pytest.approx(385.7e6 * 2 / 2**30, rel=0.01)  # bf16 weights
    assert rows["optimizer state"] == pytest.approx(385.7e6 * 12 / 8 / 2**30, rel=0.01)  # ZeRO over DP = 8
    assert rows["activations (checkpointed)"] < rows["activations"] / 4
    assert rows["total"] > rows["total, activation ckpt"]


# ------------------------------------------------------------------ sequence parallelism (--sp)
def test_sp1_leaves_the_estimate_unchanged():
    """The numbers of the estimator before --sp existed, to the byte (bf16 flash-attn 380m at 4096 bases,
    fp32 CPU tiny at 300; the saved bytes since the CPU's latent attention runs per row and RoPE's
    tables span the whole head, one pair per module and pass; on the GPU since pass 2's biased
    blocks are priced in the key-column form): S = 1 changes nothing."""
    cases = {("380m", 1, 4096, "gpu", 2): (9428669644.0, 54525952.0, 907156764.0, 214204416.0),
             ("tiny", 2, 300, "cpu", 4): (143215312.0, 2830336.0, 16830576.0, 8979136.0)}
    for (model, micro, seq, device, nbytes), expected in cases.items():
        cfg = MergeDNAConfig.from_preset(model)
        got = []
        for ckpt in (False, True):
            for sp in ({}, {"sp": 1}):
                est = activation_estimate(cfg, micro, seq, 1, Kernels(device, nbytes), ckpt, **sp)
                got.append((est.saved, est.transient))
        assert got[0] == got[1] and got[2] == got[3]
        assert (*got[0], *got[2]) == expected, model


@pytest.mark.parametrize("device", ["gpu", "cpu"])
@pytest.mark.parametrize("sp", [2, 4])
def test_sp_divides_block_terms_and_keeps_the_rest(device, sp):
    """part="blocks" sites cost 1/S (full-attention blocks exactly; local-window blocks plus a halo of
    `window` tokens each side); every part="other" site (merges, unmerges, norms, head, losses) stays
    full-size; the backward peak adds the all-gathered [T, D] stream."""
    cfg = MergeDNAConfig.from_preset("tiny", **FIXED)  # N = 4096, L = 2048: widths divide by S
    k, N, L, w, D = Kernels(device, 4), 4096, 2048, cfg.window, cfg.dim
    for ckpt in (False, True):
        one, split = (activation_estimate(cfg, 1, N, 1, k, ckpt, sp=s) for s in (1, sp))
        assert split.by_site.keys() == one.by_site.keys()
        for key, nbytes in one.by_site.items():
            if key[2] == "other":
                assert split.by_site[key] == nbytes, key
        for p in ("MTR", "AMTM"):  # the full passes: the decoders run at L and N tokens
            assert split.by_site[(p, "latent_decoder", "blocks")] * sp == pytest.approx(
                one.by_site[(p, "latent_decoder", "blocks")], rel=1e-12)
            assert split.by_site[(p, "local_decoder", "blocks")] == pytest.approx(
                one.by_site[(p, "local_decoder", "blocks")] * (N // sp + 2 * w) / N, rel=1e-12)
            assert split.by_site[(p, "latent_encoder", "blocks")] * sp == pytest.approx(
                one.by_site[(p, "latent_encoder", "blocks")], rel=1e-12)
        assert split.saved < one.saved
        assert split.transient >= N * D * 4  # the gathered stream of the widest blocks
    assert L % sp == 0


def test_sp_shards_zero_states_over_dp_times_sp_and_replicates_parameters():
    cfg = MergeDNAConfig.from_preset("tiny")
    by_dp = estimate(cfg, 1, 1, 4, 2, 1, 256, sp=1)
    by_sp = estimate(cfg, 1, 1, 1, 2, 1, 256, sp=4)  # one group of S = 4: ZeRO over 4 ranks
    assert by_sp["parameters"] == by_dp["parameters"]
    assert by_sp["gradients"] == by_dp["gradients"] and by_sp["optimizer"] == by_dp["optimizer"]


@pytest.mark.parametrize("layout, message", [
    ({"tp": 2, "pp": 1, "sp": 2}, "composes with data parallelism and ZeRO only"),
    ({"tp": 1, "pp": 2, "sp": 2}, "composes with data parallelism and ZeRO only"),
    ({"tp": 1, "pp": 1, "sp": 3}, "must divide the number of attention heads (16)"),
])
def test_sp_refusals(capsys, layout, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_sequence_parallel(MergeDNAConfig.from_preset("380m"), **layout)
    with pytest.raises(SystemExit) as e:
        estimate_main(["--model", "380m", *(f"--{k}={v}" for k, v in layout.items())])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one line, naming the flag
    assert f"error: --sp {layout['sp']}: " in err and message in err


def cli_rows(out: str) -> dict[str, str]:
    return {line[:30].strip(): line[30:].strip() for line in out.splitlines() if line.startswith("  ")}


def test_cli_sp_per_gpu_and_verdicts(capsys):
    assert estimate_main(["--model", "380m", "--seq-length", "131072", "--sp", "8"]) == 0
    out = capsys.readouterr().out
    assert "TP=1 PP=1 SP=8 DP=1 (8 GPUs)" in out and "per GPU:" in out
    rows = cli_rows(out)
    gradients = float(rows["gradients"].split()[0])
    assert gradients == pytest.approx(385.7e6 * 2 / 8 / 2**30, rel=0.01)  # ZeRO-2 over DP x S = 8
    for verdict in ("verdict", "verdict, activation ckpt"):
        assert rows[verdict].split(" (")[0] in ("fits", "tight", "does not fit"), rows
    assert estimate_main(["--model", "380m", "--seq-length", "131072"]) == 0  # S = 1: no verdict lost
    assert cli_rows(capsys.readouterr().out)["verdict"].startswith("does not fit")


def test_cli_sp_sweep_over_gpu_counts(capsys):
    assert estimate_main(["--model", "380m", "--seq-length", "32768", "--sp-sweep"]) == 0
    out = capsys.readouterr().out
    table = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "GiB" in line]
    assert [(int(r[0]), int(r[1])) for r in table] == [(1, 8), (2, 4), (4, 2), (8, 1)]  # (S, DP) on 8 GPUs
    totals = [float(r[2].split()[0]) for r in table]
    assert totals == sorted(totals, reverse=True) and totals[-1] < totals[0] / 3
