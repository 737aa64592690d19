"""The SLURM side without a cluster: slurm/preflight.py's batch arithmetic and refusals, and the
job templates' syntax, documented overrides and directives. The templates on a real cluster are
tests/system/test_slurm.py."""

import re
import subprocess
import sys

from tests.helpers import REPO


def preflight(world_size: int, *train_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "slurm/preflight.py", "--world-size", str(world_size), "--nodes",
                           str(max(1, world_size // 8)), "--", "--mock-data", "--model", "tiny", *train_args],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_preflight_keeps_global_batch_across_node_counts():
    # 380m recipe on 1, 4 and 8 nodes: accumulation 4, 1, then the micro-batch is lowered to fit.
    for world, accumulation, micro in ((8, 4, 8), (32, 1, 8), (64, 1, 4)):
        proc = preflight(world, "--ds_config", "ds_configs/cpu.json", "--micro-batch-size", "8",
                         "--global-batch-size", "256")
        assert proc.returncode == 0, proc.stderr
        assert f"global batch 256 = micro {micro} x accumulation {accumulation} x DP {world}" in proc.stderr
        assert proc.stdout.strip() == ("" if micro == 8 else f"--micro-batch-size {micro}")
    # 3 nodes: DP 24 cannot divide 256; the job must fail before launching any rank, saying why.
    proc = preflight(24, "--ds_config", "ds_configs/cpu.json", "--global-batch-size", "256")
    assert proc.returncode == 2 and "not divisible" in proc.stderr, proc.stderr
    # An impossible TP layout (tiny has 4 heads) is caught by train.py's own check.
    proc = preflight(8, "--ds_config", "ds_configs/cpu.json", "--tensor-model-parallel-size", "8")
    assert proc.returncode == 2 and "preflight: error" in proc.stderr, proc.stderr


def test_preflight_counts_sequence_parallel_ranks_out_of_dp():
    # pretrain_380m_long.sh's arithmetic: S ranks share a sample, so DP = world / S sets accumulation.
    proc = preflight(8, "--ds_config", "ds_configs/cpu.json", "--sequence-parallel-size", "4",
                     "--micro-batch-size", "1", "--global-batch-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert "SP 4 x DP 2" in proc.stderr, proc.stderr
    assert "global batch 32 = micro 1 x accumulation 16 x DP 2" in proc.stderr, proc.stderr
    # SP with TP is refused before launch, in one line.
    proc = preflight(8, "--ds_config", "ds_configs/cpu.json", "--sequence-parallel-size", "2",
                     "--tensor-model-parallel-size", "2")
    assert proc.returncode == 2, proc.stderr
    assert "preflight: error: --sequence-parallel-size 2 composes with" in proc.stderr, proc.stderr


def test_templates_parse_and_document_overrides():
    for template in sorted((REPO / "slurm").glob("pretrain_*.sh")):
        text = template.read_text()
        assert subprocess.run(["bash", "-n", str(template)], check=False,
                              capture_output=True).returncode == 0, template
        header = text.split("#SBATCH", 1)[0]
        for var in ("MODEL", "DATA", "SAVE", "DS_CONFIG", "TRAIN_ITERS", "GPUS_PER_NODE", "EXTRA_ARGS"):
            assert f"#   {var}=" in header, f"{template.name}: {var} undocumented"
            assert re.search(rf'^: "\$\{{{var}:?=', text, re.MULTILINE), (
                f"{template.name}: {var} has no default")
        for directive in ("--gpus-per-node=8", "--signal=USR1@", "--requeue", "--open-mode=append", "%j"):
            assert directive in text, f"{template.name}: missing {directive}"
        assert 'source "$MEGAMERGE_HOME/slurm/common.sh"' in text  # shared set-up is sourced, not copied
