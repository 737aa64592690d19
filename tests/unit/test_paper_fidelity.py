"""MergeDNA's departures from the paper (issue 15) are named options whose default is the paper's
method: the unmerge rule, the local merge selection, the AMTM normalisation, the latent merge's
schedule and its size-proportional attention. Each is checked for
its defining behaviour, finite losses and the latent-MTR gradient isolation in both settings; old
configs load with the behaviour they were trained with; each family carries its paper's optimiser."""

import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.carmania.config import CARMANIA_PRESETS
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.mergedna import objective
from megamerge.models.mergedna.config import PRESETS
from megamerge.models.mergedna.token_merging import (
    TokenState,
    grouping_similarity,
    local_window_merge,
    window_quotas,
)
from megamerge.training.arguments import parse_args
from megamerge.vocabulary import base_targets

# Every option with its paper value first and megamerge's extension second.
OPTIONS = {
    "rotary_merge": (False, True),
    "merge_selection": ("per_window", "global_rank"),
    "amtm_normalization": ("per_masked_token", "per_masked_base"),
    "size_proportional_attention": (True, False),
    "latent_merge_schedule": ("per_block", "single_layer"),
}
SETTINGS = [(name, value) for name, values in OPTIONS.items() for value in values]


def _ids(B=2, n=256, seed=0):
    return torch.randint(0, 4, (B, n), generator=torch.Generator().manual_seed(seed))


def _tiny(**overrides) -> MergeDNA:
    torch.manual_seed(0)
    return MergeDNA(MergeDNAConfig.from_preset("tiny", **overrides)).train()


# ------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_mergedna_preset_is_the_papers_method(name):
    cfg = MergeDNAConfig.from_preset(name)
    assert cfg.paper_deviations() == []
    for option, (paper, _) in OPTIONS.items():
        assert getattr(cfg, option) == paper, option


@pytest.mark.parametrize("name", sorted(CARMANIA_PRESETS))
def test_carmania_presets_report_no_deviation(name):
    assert CARMANIA_PRESETS[name].paper_deviations() == []


def test_deviations_name_each_departing_option():
    cfg = MergeDNAConfig.from_preset("tiny", rotary_merge=True, merge_selection="global_rank",
                                     amtm_normalization="per_masked_base", size_proportional_attention=False,
                                     latent_merge_schedule="single_layer")
    assert cfg.paper_deviations() == ["rotary_merge=True", "merge_selection=global_rank",  # in field order
                                      "latent_merge_schedule=single_layer",
                                      "size_proportional_attention=False",
                                      "amtm_normalization=per_masked_base"]


def test_unknown_option_value_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="merge_selection='per_token' must be one of"):
        MergeDNAConfig.from_preset("tiny", merge_selection="per_token")


def test_a_config_saved_before_the_options_loads_with_its_old_behaviour():
    saved = MergeDNAConfig.from_preset("tiny").to_dict()
    for option in OPTIONS:
        del saved[option]
    old = MergeDNAConfig.from_dict(saved)
    assert (old.rotary_merge, old.merge_selection, old.amtm_normalization,
            old.size_proportional_attention) == (True, "global_rank", "per_masked_base", False)
    assert (old.latent_merge_schedule, old.latent_merge_layer) == ("single_layer",
                                                                   old.latent_encoder_layers // 2)
    assert len(old.paper_deviations()) == len(OPTIONS)
    new = MergeDNAConfig.from_preset("tiny")
    assert MergeDNAConfig.from_dict(new.to_dict()) == new  # a current config round-trips unchanged


def test_train_flags_select_each_option():
    from megamerge.training.model_from_flags import model_config

    assert model_config(parse_args(["--mock-data"])).paper_deviations() == []
    cfg = model_config(parse_args(["--mock-data", "--rotary-merge", "--merge-selection", "global_rank",
                                   "--amtm-normalization", "per_masked_base",
                                   "--no-size-proportional-attention",
                                   "--latent-merge-schedule", "single_layer"]))
    assert (cfg.rotary_merge, cfg.merge_selection, cfg.amtm_normalization,
            cfg.size_proportional_attention) == (True, "global_rank", "per_masked_base", False)
    assert (cfg.latent_merge_schedule, cfg.latent_merge_layer) == ("single_layer",
                                                                   cfg.latent_encoder_layers // 2)


def test_renamed_flags_still_select_their_option_with_a_warning(capsys):
    """--merge-rule and --latent-attention became --[no-]rotary-merge and
    --[no-]size-proportional-attention (one name for a flag and its config field)."""
    from megamerge.training.model_from_flags import model_config

    old = model_config(parse_args(["--mock-data", "--merge-rule", "rotary", "--latent-attention", "plain"]))
    new = model_config(parse_args(["--mock-data", "--rotary-merge", "--no-size-proportional-attention"]))
    assert old == new and old.paper_deviations() == ["rotary_merge=True", "size_proportional_attention=False"]
    err = capsys.readouterr().err
    assert "--merge-rule rotary is deprecated and will be removed; use --rotary-merge" in err
    assert ("--latent-attention plain is deprecated and will be removed; "
            "use --no-size-proportional-attention" in err)
    paper = model_config(parse_args(["--mock-data", "--merge-rule", "paper_average",
                                     "--latent-attention", "size_proportional"]))
    assert paper.paper_deviations() == []


def test_every_method_option_is_declared_once_with_its_paper_value():
    """The declarations on the config fields are the one source: defaults, choices, paper_deviations
    and the values an old config without the field loads with all come from them."""
    from megamerge.models.common.config_options import declared_fields, values_before_named

    options = {name: d for name, (_, d) in declared_fields(MergeDNAConfig).items() if d.is_method_option}
    assert set(options) == {"rotary_merge", "merge_selection", "amtm_normalization",
                            "size_proportional_attention", "latent_merge_schedule", "merge_decisions"}
    paper = MergeDNAConfig()
    for name, d in options.items():
        assert getattr(paper, name) == d.paper and d.paper in d.choices and d.before in d.choices, name
        other = next(c for c in d.choices if c != d.paper)
        overrides = {"latent_merge_layer": 2} if name == "latent_merge_schedule" else {}
        assert MergeDNAConfig(**{name: other}, **overrides).paper_deviations() == [f"{name}={other}"]
    assert values_before_named(MergeDNAConfig) == {name: d.before for name, d in options.items()}
    with pytest.raises(ValueError,
                       match=r"merge_selection='nope' must be one of \['per_window', 'global_rank'\]"):
        MergeDNAConfig(merge_selection="nope")


@pytest.mark.parametrize("model,expected", [
    ("tiny", (1e-4, 10_000, 1e-8, 0.9, 0.95, 1e-8)),
    ("380m", (1e-4, 10_000, 1e-8, 0.9, 0.95, 1e-8)),
    ("carmania-tiny", (5e-4, 400, 0.2, 0.9, 0.999, 1e-6)),
    ("carmania-83m", (5e-4, 400, 0.2, 0.9, 0.999, 1e-6)),
])
def test_each_family_trains_with_its_papers_optimiser(model, expected):
    args = parse_args(["--mock-data", "--model", model])
    got = (args.lr, args.lr_warmup_iters, args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_eps)
    assert got == expected


def test_an_optimiser_flag_beats_the_family_default():
    args = parse_args(["--mock-data", "--model", "carmania-tiny", "--lr", "1e-3", "--weight-decay", "0.0",
                       "--adam-beta2", "0.95"])
    assert (args.lr, args.weight_decay, args.adam_beta2, args.adam_eps) == (1e-3, 0.0, 0.95, 1e-6)


# ------------------------------------------------------------------------------ unmerge rule
def _local_decoder_input(model: MergeDNA, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-base states [B, N, D] the Local Decoder's first block receives (right after the
    unmerge), and the base -> token map [B, N]."""
    seen = {}
    hook = model.local_decoder.blocks[0].register_forward_pre_hook(lambda _, args: seen.update(x=args[0]))
    try:
        model.eval()
        with torch.no_grad():
            model(ids)
            _, assign, _ = model.encode(ids)
    finally:
        hook.remove()
        model.train()
    return seen["x"], assign


@pytest.mark.parametrize("rotary", [False, True])
def test_paper_unmerge_gives_every_base_of_a_token_its_vector(rotary):
    x, assign = _local_decoder_input(_tiny(rotary_merge=rotary), _ids(1, 128))  # [1, N, D], [1, N]
    multi_base = [t for t in assign[0].unique() if int((assign[0] == t).sum()) > 1]
    assert multi_base, "the tiny model merged nothing"
    spreads = torch.stack([x[0][assign[0] == t].std(0).max() for t in multi_base])
    if rotary:  # the rotary merge's extension: bases of one token get different vectors
        assert bool((spreads > 1e-4).all())
    else:  # Z_N = S^T Z_L: identical vectors
        assert float(spreads.max()) == 0.0


# ------------------------------------------------------------------------------ merge selection
def test_window_quotas_spread_the_budget_and_pass_on_what_a_window_cannot_take():
    capacity = torch.tensor([[8, 8, 8, 8], [8, 1, 8, 0], [2, 2, 2, 2]])
    r = torch.tensor([10, 10, 20])
    n_windows = torch.tensor([4, 3, 4])
    quota = window_quotas(capacity, r, n_windows)
    assert quota.tolist() == [[3, 3, 2, 2], [6, 1, 3, 0], [2, 2, 2, 2]]
    assert bool((quota <= capacity).all())


@pytest.mark.parametrize("per_window", [True, False])
def test_per_window_selection_merges_evenly_across_windows(per_window):
    B, L, window = 3, 64, 8
    g = torch.Generator().manual_seed(3)
    state = TokenState.from_bases(torch.randn(B, L, 4, generator=g), torch.ones(B, L, dtype=torch.bool))
    # Windows 0..3 hold near-identical neighbours, 4..7 dissimilar ones: a global ranking piles its
    # merges into the first half, the paper's per-window rule takes r_l = 2 pairs in every window.
    grouping = torch.randn(B, L, 16, generator=g)
    grouping[:, : L // 2] = grouping[:, :1] + 0.01 * grouping[:, : L // 2]
    r = torch.full((B,), 16)
    new, token_map = local_window_merge(state, grouping_similarity(grouping), r, window, 0.1,
                                          per_window=per_window)
    assert new.lengths.tolist() == [L - 16] * B  # the per-sample target is met either way
    removed_per_window = torch.stack([
        ((token_map[:, w * window:(w + 1) * window].diff(dim=1) == 0).sum(1)) for w in range(L // window)
    ], 1)  # [B, W]: a merged pair shows as two slots mapped to one token
    if per_window:
        assert removed_per_window.tolist() == [[2] * (L // window)] * B
    else:
        assert bool((removed_per_window[:, L // window // 2:] < 2).any())


def test_per_window_gate_carries_the_straight_through_gradient():
    B, L = 2, 32
    state = TokenState.from_bases(torch.randn(B, L, 4), torch.ones(B, L, dtype=torch.bool))
    grouping = torch.randn(B, L, 8, requires_grad=True)
    new, _ = local_window_merge(state, grouping_similarity(grouping), torch.tensor([6, 9]), 8, 0.1,
                                  per_window=True)
    new.x.sum().backward()
    assert grouping.grad is not None and grouping.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ AMTM normalisation
def test_amtm_per_masked_token_sums_over_bases_and_divides_by_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 10, 4, generator=g)
    ids = torch.randint(0, 4, (2, 10), generator=g)
    base_mask = torch.zeros(2, 10, dtype=torch.bool)
    base_mask[0, :5] = True  # sample 0: K_0 tokens cover 5 bases; sample 1: 3 bases
    base_mask[1, 4:7] = True
    token_lengths = torch.tensor([6, 4])  # K_b = round(0.5 * L_b) = 3, 2
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), ids.reshape(-1),
                                           reduction="none").view(2, 10)
    summed = ce[base_mask].sum()
    paper = MergeDNAConfig.from_preset("tiny")
    loss, per_base, _, scored = objective.amtm_loss(paper, logits, base_targets(ids), base_mask,
                                                    token_lengths)
    assert torch.allclose(loss, summed / 5) and torch.allclose(per_base, summed / 8) and int(scored) == 8
    ours = MergeDNAConfig.from_preset("tiny", amtm_normalization="per_masked_base")
    loss, per_base, _, _ = objective.amtm_loss(ours, logits, base_targets(ids), base_mask, token_lengths)
    assert torch.allclose(loss, summed / 8) and torch.allclose(per_base, summed / 8)


def test_amtm_normalisations_differ_by_bases_per_masked_token_in_the_model():
    ids, seeds = _ids(2, 256), sample_seeds(7, torch.arange(2))
    outs = {norm: _tiny(amtm_normalization=norm).compute_losses(ids, seeds)
            for norm in OPTIONS["amtm_normalization"]}
    paper, ours = outs["per_masked_token"], outs["per_masked_base"]
    # the eval metric is the same in both
    assert torch.allclose(paper["amtm_per_base"], ours["amtm"], rtol=1e-6)
    model = _tiny()
    masked_tokens = objective.amtm_token_count(model.cfg,
                                               model.token_targets(torch.full((2,), 256), seeds)).sum()
    summed = ours["amtm"] * ours["masked_count"]  # cross-entropy summed over the masked bases
    assert torch.allclose(paper["amtm"], summed / masked_tokens, rtol=1e-6)
    assert 1.5 < float(ours["masked_count"] / masked_tokens) < 3.0  # about 2 bases per masked token


# ------------------------------------------------------------------------------ latent attention
def test_size_proportional_attention_equals_attending_to_every_merged_constituent():
    """ToMe's property: a key of size s with log(s) added weighs as s copies of itself would."""
    from megamerge.models.common.full_attention import full_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 3, 8, generator=g, dtype=torch.float64)
    k, v = torch.randn(1, 2, 3, 8, generator=g, dtype=torch.float64), torch.randn(1, 2, 3, 8, generator=g,
                                                                                  dtype=torch.float64)
    sizes = torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64)
    merged = full_attention(q, k, v, torch.ones(1, 3, dtype=torch.bool), key_bias=sizes.log())
    copies = torch.tensor([0, 0, 0, 1, 2, 2])
    expanded = full_attention(q, k[:, :, copies], v[:, :, copies], torch.ones(1, 6, dtype=torch.bool))
    assert torch.allclose(merged, expanded, atol=1e-12)


def test_latent_key_bias_is_the_log_of_each_latent_groups_token_count():
    latent_map = torch.tensor([[0, 0, 1, 2, 2, 2, 0]])
    valid = torch.tensor([[True] * 6 + [False]])
    cfg = MergeDNAConfig.from_preset("tiny")
    bias = objective.latent_key_bias(cfg, latent_map, valid, 4)
    assert torch.allclose(bias, torch.tensor([[2.0, 1.0, 3.0, 1.0]]).log())
    plain = MergeDNAConfig.from_preset("tiny", size_proportional_attention=False)
    assert objective.latent_key_bias(plain, latent_map, valid, 4) is None


def test_size_proportional_attention_changes_only_the_latent_mtr_pass():
    ids, seeds = _ids(2, 200), sample_seeds(1, torch.arange(2))
    paper = _tiny().compute_losses(ids, seeds)
    plain = _tiny(size_proportional_attention=False).compute_losses(ids, seeds)
    for key in ("mtr", "amtm"):
        assert torch.equal(paper[key], plain[key]), key
    assert not torch.equal(paper["latent_mtr"], plain["latent_mtr"])


# ------------------------------------------------------------------------------ latent merge schedule
def _latent_pass(schedule: str, lengths: list[int], latent_compression: float = 0.5):
    """Pass 2's Latent Encoder on random tokens with per-sample lengths L_b: (the tokens, the
    merged state, the composed map, and what each block received: (width, valid, key bias))."""
    model = _tiny(latent_merge_schedule=schedule, latent_compression=latent_compression)
    B, L, D = len(lengths), max(lengths), model.cfg.dim
    valid = torch.arange(L)[None] < torch.tensor(lengths)[:, None]  # [B, L]
    tokens = TokenState(x=torch.randn(B, L, D, generator=torch.Generator().manual_seed(5)) * valid[..., None],
                        pos=torch.arange(L).float().expand(B, L) * 2 + 0.5, sizes=valid.float() * 2,
                        valid=valid,
                        assign=(torch.arange(2 * L) // 2).clamp(max=L - 1).expand(B, 2 * L))
    seen = []
    hooks = [b.register_forward_pre_hook(lambda _, a: seen.append((a[0].shape[1], a[2], a[3])))
             for b in model.latent_encoder.blocks]
    try:
        merged, latent_map = model.latent_encoder(tokens, merge_latent=True)
    finally:
        for h in hooks:
            h.remove()
    return model.cfg, tokens, merged, latent_map, seen


@pytest.mark.parametrize("schedule", OPTIONS["latent_merge_schedule"])
@pytest.mark.parametrize("latent_compression", [0.5, 0.3])
def test_latent_merge_reaches_k_per_sample_with_groups_covering_every_token_once(
        schedule, latent_compression):
    lengths = [61, 40, 17, 2, 1]
    cfg, tokens, merged, latent_map, _ = _latent_pass(schedule, lengths, latent_compression)
    L_b = torch.tensor(lengths)
    K_b = objective.latent_token_count(cfg, L_b)
    assert torch.equal(merged.lengths, K_b)  # exactly K_b = ceil(latent_compression * L_b) for every sample
    assert torch.equal(merged.valid, torch.arange(merged.valid.shape[1])[None] < K_b[:, None])
    for b, (l_b, k_b) in enumerate(zip(lengths, K_b.tolist())):
        groups = latent_map[b, :l_b]
        assert groups.min() >= 0 and groups.max() < k_b
        assert torch.equal(groups.unique(), torch.arange(k_b))  # every group holds at least one token
    counts = objective.group_sizes(latent_map, tokens.valid, merged.valid.shape[1])  # [B, K]
    assert torch.equal(counts.sum(1), L_b.float())  # every valid token in exactly one group
    # The composed map is the merged state's: sizes add up, positions are size-weighted means.
    sizes = torch.zeros_like(merged.sizes).scatter_add(1, latent_map, tokens.sizes)
    assert torch.equal(sizes, merged.sizes)
    pos = torch.zeros_like(merged.pos).scatter_add(1, latent_map, tokens.sizes * tokens.pos)
    assert torch.allclose(pos / sizes.clamp_min(1), merged.pos, atol=1e-4)
    back = objective.unmerge_latent(cfg, merged.x, merged.pos, latent_map, tokens.pos)  # [B, L, D]
    assert torch.equal(back, merged.x.gather(1, latent_map[..., None].expand(-1, -1, cfg.dim)))


@pytest.mark.parametrize("schedule", OPTIONS["latent_merge_schedule"])
def test_latent_merge_schedule_shrinks_the_sequence_where_it_says(schedule):
    lengths = [64, 50, 9]
    cfg, _, merged, _, seen = _latent_pass(schedule, lengths)
    counts = [valid.sum(1).tolist() for _, valid, _ in seen]  # tokens each block sees, per sample
    n = cfg.latent_encoder_layers
    if schedule == "per_block":  # block 0 sees L_b, then every block fewer, never less than half as many
        assert counts[0] == lengths
        for before, after in zip(counts, counts[1:] + [merged.lengths.tolist()]):
            assert all(a < b or b == k for a, b, k in zip(after, before, merged.lengths.tolist()))
            assert all(2 * a >= b for a, b in zip(after, before))
        assert [counts[i][0] for i in range(n)] == [64, 56, 48, 40]  # ToMe's constant r = (64 - 32) / 4
    else:  # one burst before block latent_merge_layer
        m = cfg.latent_merge_layer
        assert counts == [lengths] * m + [merged.lengths.tolist()] * (n - m)


@pytest.mark.parametrize("schedule", OPTIONS["latent_merge_schedule"])
def test_every_merged_block_attends_to_each_token_as_often_as_the_local_tokens_it_stands_for(schedule):
    """After each merge, exp(key bias) of a latent token is the count of local tokens in it (the
    composed map, not the last step's), so the size-proportional bias equals s copies (the test
    above on full_attention) of the local tokens."""
    lengths = [64, 37]
    _, _, _, _, seen = _latent_pass(schedule, lengths)
    merged_blocks = [(width, valid, bias) for width, valid, bias in seen if bias is not None]
    assert len(merged_blocks) == (3 if schedule == "per_block" else 2)
    for _, valid, bias in merged_blocks:
        stands_for = bias.exp() * valid  # [B, T]
        assert torch.allclose(stands_for.sum(1), torch.tensor(lengths).float())
        assert torch.allclose(stands_for, stands_for.round()) and bool((stands_for[valid] >= 1).all())
        assert bool((stands_for[valid] > 1).any())


def test_latent_merge_layer_belongs_to_the_single_layer_schedule():
    assert MergeDNAConfig.from_preset("tiny").latent_merge_layer is None
    assert MergeDNAConfig.from_preset("tiny", latent_merge_schedule="single_layer").latent_merge_layer == 2
    with pytest.raises(ValueError,
                       match="latent_merge_layer=1 applies to latent_merge_schedule=single_layer"):
        MergeDNAConfig.from_preset("tiny", latent_merge_layer=1)
    with pytest.raises(ValueError, match="latent_compression=0.05 is below 0.0625"):
        MergeDNAConfig.from_preset("tiny", latent_compression=0.05)
    MergeDNAConfig.from_preset("tiny", latent_merge_schedule="single_layer",
                               latent_compression=0.05)  # a burst can


def test_single_layer_is_the_burst_megamerge_ran_before():
    """The old code path, written out: global_merge_to to K at block latent_merge_layer."""
    from dataclasses import replace

    from megamerge.models.common.rope import rope_angles
    from megamerge.models.mergedna.token_merging import global_merge_to

    cfg, tokens, merged, latent_map, _ = _latent_pass("single_layer", [40, 33])
    enc, state, bias = _tiny(latent_merge_schedule="single_layer").latent_encoder, tokens, None
    for i, block in enumerate(enc.blocks):
        if i == cfg.latent_merge_layer:
            state, ref_map = global_merge_to(state, objective.latent_token_count(cfg, tokens.lengths))
            bias = objective.latent_key_bias(cfg, ref_map, tokens.valid, state.x.shape[1])
        state = replace(state, x=block(state.x, rope_angles(state.pos, cfg.head_dim, cfg.rope_theta),
                                       state.valid, bias))
    assert torch.equal(ref_map, latent_map)
    assert torch.equal(enc.norm(state.x), merged.x)


# ------------------------------------------------------------------------------ every setting
@pytest.mark.parametrize("option,value", SETTINGS)
def test_losses_are_finite_and_latent_mtr_leaves_the_local_encoder_alone(option, value):
    model = _tiny(**{option: value})
    out = model.compute_losses(_ids(2, 200))
    for key in ("loss", "mtr", "latent_mtr", "amtm", "amtm_per_base"):
        assert torch.isfinite(out[key]), key
    out["latent_mtr"].backward()
    for name, p in model.local_encoder.named_parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.latent_encoder.parameters())


def test_evaluation_reads_the_masked_base_mean_in_both_pipelines():
    """Perplexity and masked-base accuracy stay per base whatever the AMTM normalisation."""
    from megamerge.models.mergedna.pipeline import OUTPUT_KEYS
    from megamerge.models.mergedna.spec import MERGEDNA_SPEC

    assert MERGEDNA_SPEC.eval_loss == "amtm_per_base" and "amtm_per_base" in OUTPUT_KEYS
    assert MERGEDNA_SPEC.eval_loss in _tiny().compute_losses(_ids(1, 64))


# ------------------------------------------------------------------------------ portable directories
def test_portable_config_records_the_deviations_and_from_pretrained_keeps_them(tmp_path):
    import json

    from megamerge.portable import load_portable, save_portable

    for name, overrides in (("paper", {}), ("rotary", {"rotary_merge": True}),
                            ("burst", {"latent_merge_schedule": "single_layer"})):
        save_portable(_tiny(**overrides), tmp_path / name)
        written = json.loads((tmp_path / name / "config.json").read_text())
        expected = [f"{k}={v}" for k, v in overrides.items()]
        assert written["paper_deviations"] == expected
        assert load_portable(tmp_path / name).cfg.paper_deviations() == expected


def test_a_portable_directory_from_before_the_options_loads_as_it_was_trained(tmp_path):
    import json

    from megamerge.portable import load_portable, save_portable

    model = _tiny(rotary_merge=True, merge_selection="global_rank", amtm_normalization="per_masked_base",
                  size_proportional_attention=False, latent_merge_schedule="single_layer")
    save_portable(model, tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    del config["paper_deviations"]
    for option in OPTIONS:
        del config["model_config"][option]
    path.write_text(json.dumps(config))
    loaded = load_portable(tmp_path)
    assert loaded.cfg == model.cfg
    ids = _ids(1, 64)
    model.eval()
    assert torch.equal(loaded(ids), model(ids))


def test_mergedna_method_flags_are_refused_for_carmania():
    from megamerge.training.ds_config import ConfigError
    from megamerge.training.model_from_flags import model_config

    assert model_config(parse_args(["--mock-data", "--model", "carmania-tiny"])).paper_deviations() == []
    with pytest.raises(ConfigError, match="--rotary-merge applies to MergeDNA models, not carmania"):
        model_config(parse_args(["--mock-data", "--model", "carmania-tiny", "--merge-rule", "rotary"]))
    with pytest.raises(ConfigError, match="--latent-mtr-weight applies to MergeDNA models, not carmania"):
        model_config(parse_args(["--mock-data", "--model", "carmania-tiny", "--latent-mtr-weight", "0.5"]))
