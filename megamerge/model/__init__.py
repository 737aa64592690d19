from .config import PRESETS, MergeDNAConfig
from .mergedna import MergeDNA

__all__ = ["MergeDNA", "MergeDNAConfig", "PRESETS"]
