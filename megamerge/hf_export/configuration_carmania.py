"""The `transformers` configuration of an exported CARMANIA (copied verbatim into the export: it
imports only transformers). megamerge's CarmaniaConfig fields travel unchanged under `carmania`."""

from transformers import PretrainedConfig


class CarmaniaHFConfig(PretrainedConfig):
    model_type = "megamerge-carmania"

    def __init__(self, carmania: dict | None = None, **kwargs):
        self.carmania = dict(carmania or {})  # megamerge's CarmaniaConfig.to_dict()
        if "dim" in self.carmania:
            kwargs.setdefault("hidden_size", self.carmania["dim"])
            kwargs.setdefault("num_hidden_layers", self.carmania["n_layers"])
        super().__init__(**kwargs)
