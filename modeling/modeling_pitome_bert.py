# Copyright 2026 The pitome_hf authors. Licensed under the Apache License, Version 2.0.
"""PiToMe BERT: a Hugging Face BERT encoder whose layers merge tokens between attention and the feed-forward block.

Each layer runs: self-attention (with the proportional-attention bias log(size) once tokens have merged) -> output
projection + residual + LayerNorm -> merge (PiToMe or ToMe, see merging.py) -> feed-forward + residual + LayerNorm.
The feed-forward block and every later layer run on fewer tokens. By default only the first 3 layers merge (the
paper's text setting).

Padded batches: every sample merges as it would alone (its budget comes from its own number of real tokens; padding
is never compared, never merged and never a destination; CLS is protected). After a layer that merges, each sample's
tokens are packed to the left and the batch is padded to its longest sample; the output's `attention_mask` says which
tokens are real and `token_sizes` (0 on padding) how many input tokens each stands for. `size_weighted_mean_pool`
(or `pooling="mean"` in the config) gives the sentence-transformers mean pooling on merged tokens.

Weights and parameter names are exactly the stock BERT's, so stock checkpoints load unchanged.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions, SequenceClassifierOutput
from transformers.models.bert.modeling_bert import (
    ALL_ATTENTION_FUNCTIONS,
    BertAttention,
    BertEmbeddings,
    BertEncoder,
    BertForSequenceClassification,
    BertLayer,
    BertModel,
    BertPooler,
    BertPreTrainedModel,
    BertSelfAttention,
    eager_attention_forward,
)
from transformers.pytorch_utils import apply_chunking_to_forward

from .configuration_pitome_bert import PiToMeBertConfig
from .merge_config import settings_of
from .merge_state import (
    MergeOutputMixin, PaddedMergeState, check_inputs, classifier_output, inherit_conversion_mappings, merge_state_for,
    return_output,
)
from .merging import weighted_mean

# transformers 5 converts checkpoint keys on load only for its own classes. BERT has no conversion of its own in
# transformers 5.24 (its parameter names did not change); if a later version adds one, give our classes the same.
# overwrite=True: remote code may import this file twice.
inherit_conversion_mappings({"PiToMeBertModel": "BertModel",
                             "PiToMeBertForSequenceClassification": "BertForSequenceClassification"})


@dataclass
class PiToMeBertModelOutput(MergeOutputMixin, BaseModelOutputWithPoolingAndCrossAttentions):
    """A `BaseModelOutputWithPoolingAndCrossAttentions` plus the merge information (`MergeOutputMixin`; per sample:
    token_counts is (B, L + 1), token_map holds -1 for padding) and `attention_mask` (B, N_out) long, 1 on real
    tokens, 0 on padding (after merging, real tokens come first)."""

    attention_mask: Optional[torch.LongTensor] = None


@dataclass
class PiToMeSequenceClassifierOutput(MergeOutputMixin, SequenceClassifierOutput):
    """A `SequenceClassifierOutput` plus the merge information (see `PiToMeBertModelOutput`)."""

    attention_mask: Optional[torch.LongTensor] = None


def size_weighted_mean_pool(output) -> torch.Tensor:
    """Mean of `last_hidden_state` over real tokens weighted by `token_sizes` (B, hidden): the sentence-transformers
    mean pooling, which stays exact on merged tokens (each merged token counts as many times as it holds tokens). A
    row without any real token pools to zeros, as sentence-transformers' (its denominator is clamped to 1e-9)."""
    return weighted_mean(output.last_hidden_state, output.token_sizes)


def text_merge_state(config, attention_mask: Optional[torch.Tensor], shape) -> PaddedMergeState:
    """A fresh per-forward merge state for a padded batch; refuses settings that cannot merge one."""
    if settings_of(config).active:
        if config.is_decoder:
            raise ValueError("PiToMe BERT cannot merge tokens in a decoder; set merge_method='none'.")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                f"token merging needs a 2-D (batch, tokens) attention_mask, got shape {tuple(attention_mask.shape)}."
            )
    if attention_mask is None or attention_mask.dim() != 2:
        valid = torch.ones(shape, dtype=torch.bool)
    else:
        valid = attention_mask.bool()
    return merge_state_for(config, valid=valid)


class PiToMeBertSelfAttention(BertSelfAttention):
    """BERT self-attention (encoder only) that also returns its key states (B, H, N, d): PiToMe's metric."""

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        if cache is not None:
            raise ValueError("PiToMe BERT is an encoder: a key/value cache is not supported.")
        kwargs.pop("encoder_hidden_states", None)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        query_layer = self.query(hidden_states).view(*hidden_shape).transpose(1, 2)
        key_layer = self.key(hidden_states).view(*hidden_shape).transpose(1, 2)
        value_layer = self.value(hidden_states).view(*hidden_shape).transpose(1, 2)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_layer,
            key_layer,
            value_layer,
            attention_mask,
            dropout=0.0 if not self.training else self.dropout.p,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return attn_output, attn_weights, key_layer


class PiToMeBertAttention(BertAttention):
    """`BertAttention` (self-attention + output projection, residual, LayerNorm) that also returns the keys."""

    def __init__(self, config, layer_idx=None):
        super().__init__(config, is_causal=False, layer_idx=layer_idx)
        self.self = PiToMeBertSelfAttention(config, is_causal=False, layer_idx=layer_idx)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        attention_output, attn_weights, keys = self.self(hidden_states, attention_mask=attention_mask, **kwargs)
        return self.output(attention_output, hidden_states), attn_weights, keys


class PiToMeBertLayer(BertLayer):
    """A BERT encoder layer that merges tokens after the attention block, before the feed-forward block."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx=layer_idx)
        self.attention = PiToMeBertAttention(config, layer_idx=layer_idx)
        self.layer_idx = layer_idx

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        merge_state: Optional[PaddedMergeState] = None,
        **kwargs,
    ):
        if encoder_hidden_states is not None:
            raise ValueError("PiToMe BERT is an encoder: encoder_hidden_states (cross-attention) is not supported.")
        if merge_state is not None:
            attention_mask = merge_state.attention_mask(attention_mask, hidden_states.dtype)
        attention_output, _, keys = self.attention(hidden_states, attention_mask, cache=cache, **kwargs)
        if merge_state is not None:
            attention_output = merge_state.step(attention_output, self.layer_idx, keys)
        return apply_chunking_to_forward(
            self.feed_forward_chunk, self.chunk_size_feed_forward, self.seq_len_dim, attention_output
        )


class PiToMeBertEncoder(BertEncoder):
    """The stock BERT encoder loop over `PiToMeBertLayer`s (the merge state reaches them as a keyword)."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.layer = nn.ModuleList([PiToMeBertLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])


def _merge_fields(state: PaddedMergeState) -> dict:
    return {"attention_mask": state.valid.long(), **state.output_fields()}


class _PiToMeBertClass:
    """What both PiToMe BERT classes declare to transformers."""

    config_class = PiToMeBertConfig
    config: PiToMeBertConfig
    _no_split_modules = ["BertEmbeddings", "PiToMeBertLayer"]
    # A checkpointed layer would run its merge twice on the shared per-forward state.
    supports_gradient_checkpointing = False
    _supports_flash_attn = False
    _supports_flex_attn = False


class PiToMeBertModel(_PiToMeBertClass, BertModel):
    """[`BertModel`] (encoder) with PiToMe token merging. The output also carries `attention_mask` (which output
    tokens are real), `token_sizes`, `token_map` and per-sample `token_counts`."""

    def __init__(self, config: PiToMeBertConfig, add_pooling_layer: bool = True):
        BertPreTrainedModel.__init__(self, config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = PiToMeBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        """input_ids (B, N) -> last_hidden_state (B, N_out, hidden), pooler_output, merge information."""
        if inputs_embeds is None:
            check_inputs(type(self).__name__, input_ids=input_ids)
        else:
            check_inputs(type(self).__name__, inputs_embeds=inputs_embeds)
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        state = text_merge_state(self.config, attention_mask, shape)
        outputs = super().forward(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            merge_state=state,
            **kwargs,
        )
        if state.sizes is None:  # no layer ran (num_hidden_layers == 0)
            state.begin(outputs.last_hidden_state)
        fields = dict(outputs)
        if self.config.pooling == "mean":
            fields["pooler_output"] = weighted_mean(outputs.last_hidden_state, state.sizes)
        result = PiToMeBertModelOutput(**{**fields, **_merge_fields(state)})
        return return_output(result, self.config, return_dict)


class PiToMeBertForSequenceClassification(_PiToMeBertClass, BertForSequenceClassification):
    """[`BertForSequenceClassification`] with PiToMe token merging. The classifier reads `pooler_output`: the stock
    pooler on CLS (never merged), or the size-weighted mean with `pooling="mean"`."""

    def __init__(self, config: PiToMeBertConfig):
        BertPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.config = config
        self.bert = PiToMeBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        """As `BertForSequenceClassification.forward` (position_ids, inputs_embeds reach the encoder through `kwargs`;
        token_type_ids is named so that Trainer keeps a dataset's sentence-pair column); the output also carries the
        encoder's merge information and shrunk attention_mask."""
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True,
                            **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        result = classifier_output(PiToMeSequenceClassifierOutput, logits, loss, outputs,
                                   attention_mask=outputs.attention_mask)
        return return_output(result, self.config, return_dict)


PiToMeBertConfig.register_for_auto_classes(PiToMeBertModel, PiToMeBertForSequenceClassification)

__all__ = [
    "PiToMeBertForSequenceClassification",
    "PiToMeBertLayer",
    "PiToMeBertModel",
    "PiToMeBertModelOutput",
    "PiToMeSequenceClassifierOutput",
    "size_weighted_mean_pool",
]
