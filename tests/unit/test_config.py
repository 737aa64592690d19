import pytest
import torch

from megamerge.models import PRESETS, MergeDNA, MergeDNAConfig


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"dim": 130, "n_heads": 4}, "must divide dim"),
        ({"window": 1}, "at least 2"),
        ({"compression_range": (0.0, 0.5)}, "0 < low <= high <= 1"),
        ({"compression_range": (0.5, 1.2)}, "0 < low <= high <= 1"),
        ({"compression_range": (0.7, 0.6)}, "0 < low <= high <= 1"),
        ({"compression_range": (0.1, 0.6)}, "can at most halve"),
        ({"latent_merge_layer": 9}, "latent_merge_layer"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        MergeDNAConfig.from_preset("tiny", **overrides)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="tiny"):
        MergeDNAConfig.from_preset("huge")


def test_config_round_trips_through_a_dict():
    cfg = MergeDNAConfig.from_preset("tiny", latent_mtr_weight=0.5)
    assert MergeDNAConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):
        counts = MergeDNA(MergeDNAConfig.from_preset(name)).parameter_counts()
    assert set(counts) == {"local_encoder", "latent_encoder", "latent_decoder", "local_decoder", "total"}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_larger_presets_scale_past_380m():
    totals = {}
    for name in ("380m", "1b", "3b", "7b"):
        with torch.device("meta"):
            totals[name] = MergeDNA(MergeDNAConfig.from_preset(name)).parameter_counts()["total"]
    assert totals["380m"] < totals["1b"] < totals["3b"] < totals["7b"]
    assert 0.9e9 < totals["1b"] < 1.1e9 and 2.9e9 < totals["3b"] < 3.4e9 and 6.5e9 < totals["7b"] < 7.3e9
