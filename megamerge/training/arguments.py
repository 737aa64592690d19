"""Megatron-style command-line flags for `megamerge/train.py`.

Defaults reproduce the paper's recipe (Table A1): AdamW (0.9, 0.95), weight decay 1e-8, lr 1e-4,
10k warm-up iterations then cosine decay over 100k, gradient clipping 1.0, sequences of 4096.
The optimiser flags left unset take the model family's paper recipe (ModelSpec.training_defaults:
MergeDNA's above, CARMANIA's AdamW (0.9, 0.999), eps 1e-6, weight decay 0.2, lr 5e-4, 400 warm-up).
The model's method flags (--rotary-merge, --merge-selection, ...) and loss settings come from the
family's config declarations (models/common/config_options.py) and default to the preset's values.
"""

from __future__ import annotations

import argparse
import typing

from megamerge.models.common.config_options import FlagDeclaration, declared_fields
from megamerge.models.registry import ALL_PRESETS, FAMILIES, family_of_preset
from megamerge.training.input_checks import refuse_once, warn_once

MODEL_DIM_FLAGS = {  # flag -> config field, for explicit dimensions on top of a preset
    "hidden_size": "dim",
    "num_attention_heads": "n_heads",
    "ffn_hidden_size": "ffn_dim",
    "num_layers": "n_layers",  # CARMANIA
    "num_query_groups": "n_kv_heads",  # CARMANIA (grouped-query attention)
    "local_encoder_layers": "local_encoder_layers",
    "latent_encoder_layers": "latent_encoder_layers",
    "latent_decoder_layers": "latent_decoder_layers",
    "local_decoder_layers": "local_decoder_layers",
}


def config_flag_declarations() -> dict[str, list[tuple[str, FlagDeclaration, object]]]:
    """Each config field a family declares as a flag (models/common/config_options.py) -> the
    families declaring it: (model name, declaration, field default), in FAMILIES order."""
    declared: dict[str, list] = {}
    for spec in FAMILIES.values():
        for name, (field, declaration) in declared_fields(spec.config_class).items():
            declared.setdefault(name, []).append((spec.model_class.__name__, declaration, field.default))
    return declared


def flag_of(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


class RenamedFlag(argparse.Action):
    """A flag's earlier name: its value is mapped to the new flag's and a warning names the new flag."""

    def __init__(self, option_strings, dest, renamed_values: dict, new_flag: str, **kwargs):
        self.renamed_values, self.new_flag = renamed_values, new_flag
        super().__init__(option_strings, dest, choices=list(renamed_values), **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        new_value = self.renamed_values[value]
        spelled = ((self.new_flag if new_value else "--no-" + self.new_flag[2:])
                   if isinstance(new_value, bool) else f"{self.new_flag} {new_value}")
        warn_once(parser.prog, f"{option_string} {value} is deprecated and will be removed; use {spelled}")
        setattr(namespace, self.dest, new_value)


def add_config_flags(group) -> None:
    """A flag per declared config field, defaulting to None: the preset's value."""
    for name, declarations in config_flag_declarations().items():
        help_text = ("; ".join(f"{model}: {d.help}" for model, d, _ in declarations)
                     + "; default: the preset's")
        _, declaration, default = declarations[0]
        if isinstance(default, bool):
            kwargs = {"action": argparse.BooleanOptionalAction}
        elif isinstance(default, tuple):
            kwargs = {"type": type(default[0]), "nargs": len(default),
                      "metavar": ("LOW", "HIGH") if len(default) == 2 else None}
        else:
            kwargs = {"type": type(default), "choices": declaration.choices}
        group.add_argument(flag_of(name), dest=name, default=None, help=help_text, **kwargs)
        if declaration.renamed_from:
            group.add_argument(flag_of(declaration.renamed_from), dest=name, action=RenamedFlag, default=None,
                               renamed_values=declaration.renamed_values, new_flag=flag_of(name),
                               help=f"deprecated: use {flag_of(name)}")


class OneLineParser(argparse.ArgumentParser):
    """A flag error is reported once, by rank 0, with the usage line (every rank parses the same flags)."""

    def error(self, message: str) -> typing.NoReturn:
        refuse_once(self.prog, message, before=self.format_usage())


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None: those flags say in their help what they default to
    (the preset's value, or off), and "(default: None)" would only contradict it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="megamerge/train.py",
        description="Pre-train MergeDNA with DeepSpeed. Launch with `deepspeed megamerge/train.py "
        "--ds_config ds_configs/zero2.json ...`, torchrun or srun (rank taken from the environment).",
        formatter_class=DefaultsHelpFormatter,
    )
    for add_group in (_model_flags, _data_flags, _batch_flags, _optimisation_flags, _checkpoint_flags,
                      _logging_flags, _parallelism_flags):
        add_group(p)
    return p


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny", choices=sorted(ALL_PRESETS),
                   help="model preset: MergeDNA (tiny, 380m, 1b, 3b, 7b) or CARMANIA (carmania-*)")
    for flag in MODEL_DIM_FLAGS:
        g.add_argument("--" + flag.replace("_", "-"), type=int, default=None, help="override the preset")
    add_config_flags(g)
    g.add_argument("--checkpoint-activations", action="store_true",
                   help="recompute each Transformer block in the backward pass")
    g.add_argument("--compile", action="store_true",
                   help="compile each Transformer block with torch.compile (regional compilation, dynamic "
                        "shapes; the merge index code between blocks stays eager)")


def _data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="prepared corpus directory (data_prep/prepare.py --out)")
    g.add_argument("--mock-data", action="store_true",
                   help="generate Markov sequences on the fly, keyed by global sample index (smoke tests)")
    g.add_argument("--seq-length", type=int, default=4096,
                   help="bases per sequence; must equal the corpus's seq_len (its manifest.json)")
    g.add_argument("--allow-seq-length-crop", action="store_true",
                   help="accept a --seq-length shorter than the corpus's seq_len: every sample is "
                        "cropped to it")
    g.add_argument("--num-workers", type=int, default=2, help="data-loader worker processes per rank")
    g.add_argument("--strict-data", action="store_true",
                   help="stop on a corrupt shard instead of skipping it")
    g.add_argument("--species-weights", default=None, metavar="FILE|uniform|by_bases",
                   help="draw each training sample's species by weight: a JSON file {species: weight}, "
                        "'uniform' or 'by_bases' (each species by its train bases); default: read the shards "
                        "as written")
    g.add_argument("--softmask-loss-weight", type=float, default=1.0, metavar="W",
                   help="multiply the loss terms of bases soft-masked (lower case) in the input FASTA by W "
                        "(MTR, latent MTR, AMTM, CARMANIA's next-token loss; the normalisers stay "
                        "unweighted); Evo 2 uses 0.1")


def _batch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batch")
    g.add_argument("--micro-batch-size", type=int, default=None,
                   help="sequences per rank per micro-step (default: the DeepSpeed config's value)")
    g.add_argument("--global-batch-size", type=int, default=None,
                   help="sequences per optimizer step (default: the DeepSpeed config's train_batch_size, "
                        "else 256)")


FAMILY_DEFAULT = "default: the model family's paper recipe (MergeDNA / CARMANIA, see the module docstring)"


def _optimisation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--train-iters", type=int, default=100_000)
    g.add_argument("--lr", type=float, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-warmup-iters", type=int, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--lr-decay-iters", type=int, default=None, help="default: --train-iters")
    g.add_argument("--lr-decay-style", default="cosine", choices=["cosine", "linear", "constant"])
    g.add_argument("--weight-decay", type=float, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--adam-beta1", type=float, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--adam-beta2", type=float, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--adam-eps", type=float, default=None, help=FAMILY_DEFAULT)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--max-skipped-iters", type=int, default=10,
                   help="stop after this many consecutive iterations skipped for NaN/Inf")
    # Fault injection for the NaN-guard test: make the loss NaN at these iterations.
    g.add_argument("--inject-nan-at", type=int, nargs="*", default=None, help=argparse.SUPPRESS)


def _checkpoint_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", default=None, help="checkpoint directory (also receives metrics.jsonl)")
    g.add_argument("--load", default=None,
                   help="resume from this checkpoint directory's `latest`; equal to --save, a first attempt "
                        "that finds no checkpoint yet starts from scratch (as slurm/ launches)")
    g.add_argument("--finetune", action="store_true", help="with --load: weights only, fresh optimizer/data")
    g.add_argument("--start-over", action="store_true",
                   help="--save holds an earlier run that this one does not resume: move it aside to "
                        "<save>.before-<UTC time> first (without this flag such a run is refused)")
    g.add_argument("--save-interval", type=int, default=1000)
    g.add_argument("--exit-interval", type=int, default=None,
                   help="save a checkpoint and exit cleanly once this iteration is reached")
    g.add_argument("--exit-duration-in-mins", type=float, default=None,
                   help="wall-clock budget from start-up: at the first iteration past it, run the final "
                        "validation (as at --train-iters), save a checkpoint and exit 0; e.g. a few minutes "
                        "below a SLURM time limit, or a fixed-time benchmark")


def _logging_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-interval", type=int, default=1000)
    g.add_argument("--eval-iters", type=int, default=10)
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense TFLOP/s per device for MFU (default: A100 312, H100 989 by device name)")


def _parallelism_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--sequence-parallel-size", type=int, default=1,
                   help="split each sample's sequence over this many ranks (DeepSpeed-Ulysses all-to-all "
                        "around latent attention, a halo for local attention: megamerge/parallel/"
                        "sequence_parallel.py); composes with data parallelism and ZeRO-2, not with TP, PP "
                        "or --compile")
    g.add_argument("--ds_config", "--deepspeed_config", dest="ds_config", default="ds_configs/cpu.json",
                   help="DeepSpeed JSON config; 'auto' values are filled from these flags")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                   help="set by the deepspeed launcher; otherwise LOCAL_RANK / SLURM_LOCALID is used")


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None and not args.mock_data:
        parser.error("give --data DIR (a prepared corpus) or --mock-data")
    if args.data is not None and args.mock_data:
        parser.error("--data and --mock-data are mutually exclusive")
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.train_iters
    apply_family_defaults(args)
    if args.min_lr > args.lr:
        parser.error(f"--min-lr {args.min_lr} is above --lr {args.lr}")
    for flag in ("train_iters", "seq_length", "log_interval", "save_interval", "eval_interval"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.finetune and not args.load:
        parser.error("--finetune needs --load")
    if args.species_weights is not None and args.mock_data:
        parser.error("--species-weights needs --data: --mock-data has no species")
    if not (args.softmask_loss_weight >= 0 and args.softmask_loss_weight < float("inf")):
        parser.error(f"--softmask-loss-weight must be a finite number >= 0, got {args.softmask_loss_weight}")
    return args


def apply_family_defaults(args: argparse.Namespace) -> None:
    """Fill every optimiser flag left unset (None) from the model family's paper recipe."""
    for dest, value in (family_of_preset(args.model).training_defaults or {}).items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
