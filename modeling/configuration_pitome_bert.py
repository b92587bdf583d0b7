# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the PiToMe BERT family: a `BertConfig` plus the token-merge settings (see merging.py).

The defaults are the paper's text setting (docs/algorithm.md, "Text encoders"): Gaussian energy, the "top" split (A = the
r highest-energy tokens, B = the next r), merging only in the first 3 layers, keep ratio 0.8.
"""

from transformers import BertConfig

from .merge_config import MergeConfigMixin, MergeSettings

POOLINGS = ("cls", "mean")
TEXT_MERGE_LAYERS = 3


class PiToMeBertConfig(MergeConfigMixin, BertConfig):
    r"""A [`BertConfig`] (BERT, MiniLM, sentence-transformers BERT encoders) with PiToMe token merging.

    The merge fields are documented on `MergeConfigMixin` in merging.py; the text defaults differ from the vision ones:
    energy="gaussian", merge_split="top", keep_ratio=0.8 and merge_layers=None meaning the first 3 layers (the paper's
    text setting; it is stored as the explicit list). Give `merge_layers=list(range(num_hidden_layers))` to merge in
    every layer.

    pooling: what `pooler_output` is. "cls" (default): the stock BERT pooler (dense + tanh on the CLS token).
        "mean": the size-weighted mean of the last hidden states over real tokens (padding excluded), i.e. the
        sentence-transformers mean pooling, computed correctly on merged tokens.

    Example:

    ```python
    >>> config = PiToMeBertConfig.from_pretrained(path_to_bert, keep_ratio=0.7, pooling="mean")
    ```
    """

    model_type = "pitome_bert"
    stock_model_types = ("bert",)
    default_protected_tokens = 1
    auto_map_classes = {
        "AutoModel": "modeling_pitome_bert.PiToMeBertModel",
        "AutoModelForSequenceClassification": "modeling_pitome_bert.PiToMeBertForSequenceClassification",
    }

    keep_ratio: float | int = 0.8
    energy: str = "gaussian"
    merge_split: str = "top"
    pooling: str = "cls"
    choice_fields = {"pooling": POOLINGS}  # checked on every path by MergeConfigMixin

    def __post_init__(self, **kwargs):
        if self.merge_layers is None and self.merge_preset is None and isinstance(self.num_hidden_layers, int):
            self.merge_layers = list(range(min(TEXT_MERGE_LAYERS, self.num_hidden_layers)))
        if (self.is_decoder or self.add_cross_attention) and MergeSettings.from_config(self).active:
            raise ValueError(
                "PiToMe BERT merges tokens of an encoder: is_decoder/add_cross_attention cannot be combined with "
                "merging (a cache or cross-attention would see a changing sequence). Set merge_method='none'."
            )
        super().__post_init__(**kwargs)



__all__ = ["PiToMeBertConfig"]
