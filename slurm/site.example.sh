# shellcheck shell=bash
# Example site environment. Copy to slurm/site.sh (picked up automatically) or point SITE_ENV at
# your own file; it is sourced by slurm/common.sh on the batch node before anything else, and its
# exports reach every rank (srun --export=ALL). Delete what does not apply to your site.

# --- software: modules, conda, or a container --------------------------------------------------
# module purge
# module load gcc/12 cuda/12.4 nccl/2.21        # what the site's PyTorch build expects
# source /shared/envs/megamerge/.venv/bin/activate && PYTHON=python
#
# Container (pyxis/enroot): every rank runs inside the image, the checkout is mounted at the same path.
# SRUN_ARGS="--container-image=/shared/images/megamerge.sqsh --container-mounts=/lustre:/lustre,$MEGAMERGE_HOME:$MEGAMERGE_HOME --no-container-remap-root"
# PYTHON=python
#
# Container (Apptainer): wrap the interpreter instead.
# PYTHON="$MEGAMERGE_HOME/slurm/apptainer-python"   # a 2-line script: exec apptainer exec --nv IMAGE python "$@"

# --- NCCL / fabric ---------------------------------------------------------------------------------
# export NCCL_SOCKET_IFNAME=ib0,bond0           # bootstrap interface: never docker0 / lo
# export NCCL_IB_HCA=mlx5_0,mlx5_1,mlx5_2,mlx5_3  # the HCAs wired to the GPUs (see `ibstat`, `nvidia-smi topo -m`)
# export NCCL_IB_GID_INDEX=3                    # RoCE only
# export NCCL_NET_GDR_LEVEL=PHB                 # GPUDirect RDMA where the topology allows it
# export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET   # once, to check the transport NCCL picked
# export NCCL_CROSS_NIC=0 NCCL_NVLS_ENABLE=1    # per vendor guidance for the system
# export GLOO_SOCKET_IFNAME=ib0                 # gloo (used by DeepSpeed for some CPU-side collectives)

# --- filesystem ----------------------------------------------------------------------------------
# export TMPDIR=/local/scratch/$SLURM_JOB_ID     # node-local scratch for torch extension builds etc.
# export TORCH_EXTENSIONS_DIR=$TMPDIR/torch_extensions
