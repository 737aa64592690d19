"""Config and flag validation: every inconsistency fails before deepspeed.initialize, with a fix."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from megamerge.models import MergeDNAConfig
from megamerge.training.arguments import parse_args
from megamerge.training.ds_config import ConfigError, resolve_ds_config
from megamerge.training.lr_schedule import learning_rate
from megamerge.training.model_from_flags import model_config
from tests.helpers import REPO, TRAIN, subprocess_env


def _args(**kw):
    base = {"tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "micro_batch_size": None,
            "global_batch_size": None, "lr": 1e-4, "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-8,
            "weight_decay": 1e-8, "clip_grad": 1.0}
    base.update(kw)
    return SimpleNamespace(**base)


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg) if isinstance(cfg, dict) else cfg)
    return str(path)


def test_auto_values_resolve_from_flags():
    cfg = resolve_ds_config(REPO / "ds_configs" / "zero2.json", _args(), world_size=8, has_cuda=True)
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 4  # 256 / (8 x 8)
    assert cfg["train_batch_size"] == 256
    assert cfg["optimizer"]["params"] == {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-8,
                                          "torch_adam": True, "fused": True}  # one fused kernel on CUDA
    assert cfg["gradient_clipping"] == 1.0
    # more nodes -> less accumulation, same global batch
    cfg32 = resolve_ds_config(REPO / "ds_configs" / "zero2.json", _args(), world_size=32, has_cuda=True)
    assert cfg32["gradient_accumulation_steps"] == 1 and cfg32["train_batch_size"] == 256


def test_the_cpu_update_is_left_as_it_was_and_an_explicit_choice_is_kept(tmp_path):
    cpu = resolve_ds_config(REPO / "ds_configs" / "cpu.json", _args(), world_size=1, has_cuda=False)
    assert "fused" not in cpu["optimizer"]["params"]
    deepspeed_fused = _write(tmp_path, {"train_micro_batch_size_per_gpu": 2,
                                        "zero_optimization": {"stage": 2},
                                        "optimizer": {"type": "AdamW", "params": {"torch_adam": False}}})
    params = resolve_ds_config(deepspeed_fused, _args(), world_size=1, has_cuda=True)["optimizer"]["params"]
    assert params["torch_adam"] is False and "fused" not in params


def test_fused_adamw_updates_as_the_default_one():
    """The fused AdamW CUDA runs (ds_config's choice) computes the update of the default one: checked on
    the CPU, where torch's fused kernel runs too, over a few steps of real gradients."""
    import torch

    def trajectory(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                fused=fused or None)
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
        for _ in range(5):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    for fused, default in zip(trajectory(True), trajectory(False), strict=True):
        assert (fused - default).abs().max() <= 1e-6


@pytest.mark.parametrize(
    "config,args,world,cuda,message",
    [
        ("zero2.json", {"pipeline_model_parallel_size": 2}, 8, True, "zero1_pp.json"),
        ("zero2.json", {"tensor_model_parallel_size": 3}, 8, True, "not divisible by TP x PP"),
        ("zero2.json", {"global_batch_size": 100}, 8, True, "not divisible by micro-batch"),
        ("zero2.json", {}, 8, False, "no CUDA device"),
        ({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3, "train_batch_size": 8,
          "zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {}}},
         {}, 2, True, r"2 x accumulation 3 x data-parallel 2 = 12, not the global batch 8"),
        ({"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2},
          "scheduler": {"type": "WarmupLR"}}, {}, 1, True, "Remove the section"),
        ({"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 0}}, {}, 1, True, "stage >= 1"),
        ({"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2},
          "optimizer": {"type": "AdamW", "params": {}}}, {}, 1, False, "torch_adam"),
        ("{not json", {}, 1, True, "not valid JSON"),
    ],
)
def test_inconsistent_configs_are_refused_with_a_fix(tmp_path, config, args, world, cuda, message):
    path = REPO / "ds_configs" / config if isinstance(config, str) and config.endswith(".json") \
        else _write(tmp_path, config)
    with pytest.raises(ConfigError, match=message):
        resolve_ds_config(path, _args(**args), world_size=world, has_cuda=cuda)


def test_missing_config_file_names_it():
    with pytest.raises(ConfigError, match="nope.json: no such file"):
        resolve_ds_config("nope.json", _args(), world_size=1, has_cuda=False)


def test_paper_recipe_is_the_default():
    args = parse_args(["--mock-data"])
    assert (args.lr, args.adam_beta1, args.adam_beta2, args.weight_decay) == (1e-4, 0.9, 0.95, 1e-8)
    assert (args.lr_warmup_iters, args.train_iters, args.lr_decay_style, args.clip_grad) == (10_000, 100_000,
                                                                                              "cosine", 1.0)
    assert args.seq_length == 4096 and model_config(args).latent_mtr_weight == 0.25


def test_a_preset_is_never_overridden_by_a_flag_left_unset(monkeypatch):
    """Issue 26, item 3: a preset whose method options and loss settings differ from the paper's keeps
    them when no flag is given; a flag given still wins."""
    from megamerge.models import registry
    from megamerge.models.mergedna import config as mergedna_config

    custom = MergeDNAConfig.from_preset("tiny", rotary_merge=True, merge_selection="global_rank",
                                        amtm_normalization="per_masked_base",
                                        size_proportional_attention=False,
                                        latent_merge_schedule="single_layer", latent_mtr_weight=0.5,
                                        compression_range=(0.3, 0.7))
    monkeypatch.setitem(mergedna_config.PRESETS, "custom", custom)
    monkeypatch.setitem(registry.ALL_PRESETS, "custom", registry.ALL_PRESETS["tiny"])
    assert model_config(parse_args(["--mock-data", "--model", "custom"])) == custom
    flagged = model_config(parse_args(["--mock-data", "--model", "custom", "--no-rotary-merge",
                                       "--latent-mtr-weight", "0.25"]))
    assert (flagged.rotary_merge, flagged.latent_mtr_weight, flagged.merge_selection) == (
        False, 0.25, "global_rank")


def test_lr_schedule_warms_up_then_decays_to_min():
    kw = {"lr": 1e-4, "min_lr": 1e-5, "warmup": 10, "decay_iters": 110, "style": "cosine"}
    assert learning_rate(0, **kw) == pytest.approx(1e-5)
    assert learning_rate(9, **kw) == pytest.approx(1e-4)
    assert learning_rate(60, **kw) == pytest.approx(0.5 * (1e-4 + 1e-5))
    assert learning_rate(110, **kw) == pytest.approx(1e-5)
    assert learning_rate(500, **kw) == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--mock-data", "--pipeline-model-parallel-size", "2", "--ds_config", "ds_configs/zero2.json"],
         "zero1_pp.json"),
        (["--mock-data", "--global-batch-size", "6", "--micro-batch-size", "4"], "not divisible"),
        (["--mock-data", "--ds_config", "missing.json"], "missing.json: no such file"),
        (["--mock-data", "--exit-duration-in-mins", "0"], "--exit-duration-in-mins must be positive"),
    ],
)
def test_cli_reports_config_errors_before_starting(flags, message):
    proc = subprocess.run([sys.executable, str(TRAIN), *flags], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_needs_data_or_mock_data():
    proc = subprocess.run([sys.executable, str(TRAIN)], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "--data DIR" in proc.stderr


def test_pipeline_layout_is_checked_for_both_families():
    from megamerge.models.registry import config_from_preset
    from megamerge.parallel.pipeline import check_pipeline_stages, pipeline_layer_count

    tiny, carmania = config_from_preset("tiny"), config_from_preset("carmania-tiny")
    check_pipeline_stages(tiny, pipeline_layer_count(tiny))  # one layer per stage is the most
    check_pipeline_stages(carmania, 1)
    with pytest.raises(ValueError, match="exceed the 9 pipeline layers"):
        check_pipeline_stages(tiny, pipeline_layer_count(tiny) + 1)
    with pytest.raises(ValueError, match="pipeline stages exist for MergeDNA only; a CarmaniaConfig"):
        check_pipeline_stages(carmania, 2)
