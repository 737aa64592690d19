"""Streaming, exactly resumable loading of the WebDataset genome shards made by data_prep/."""

from megamerge.data.collate import collate_codes
from megamerge.data.dataset import LoaderConfig, ShardStreamDataset
from megamerge.data.loader import PretrainLoader, build_pretrain_loader
from megamerge.data.shards import CorruptShardError, load_manifest, split_shards

__all__ = [
    "CorruptShardError",
    "LoaderConfig",
    "PretrainLoader",
    "ShardStreamDataset",
    "build_pretrain_loader",
    "collate_codes",
    "load_manifest",
    "split_shards",
]
