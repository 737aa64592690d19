"""The `transformers` configuration of an exported MergeDNA (copied verbatim into the export: it
imports only transformers). megamerge's own MergeDNAConfig fields travel unchanged under
`mergedna`, so the export never restates them."""

from transformers import PretrainedConfig


class MergeDNAHFConfig(PretrainedConfig):
    model_type = "megamerge-mergedna"

    def __init__(self, mergedna: dict | None = None, pooling: str = "mean_tokens", label_mean: float = 0.0,
                 label_std: float = 1.0, **kwargs):
        self.mergedna = dict(mergedna or {})  # megamerge's MergeDNAConfig.to_dict()
        self.pooling = pooling  # sequence classification: mean_tokens or mean_bases (finetune/heads.py)
        # A regression head was trained on targets standardised with train's mean and std; the
        # exported model answers in label units, as tools/finetune.py's predictions do.
        self.label_mean = label_mean
        self.label_std = label_std
        if "dim" in self.mergedna:
            kwargs.setdefault("hidden_size", self.mergedna["dim"])
        super().__init__(**kwargs)
