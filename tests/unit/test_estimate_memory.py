"""tools/estimate_memory.py: the analytic activation model against a saved-tensor census of real
forward passes, and the whole estimate against the measured peak RSS of a real CPU run."""

import pytest

from benchmarks.activation_census import census
from benchmarks.bench_memory import RunConfig, estimated, measure
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
