"""The source sentence as a BERT sees it, for the models that put a BERT inside the NMT model
(CTNMT, BERT-fused): positions that ignore padding, chosen hidden layers, frozen or trained.

The input is the ``translation_bert`` source: ``[CLS] x [SEP]`` in the BERT's own ids, right-padded
(B x S). The authors of BERT-fused (bert-nmt/bert-nmt, ``fairseq/models/transformer.py``) left-pad
and shift the positions instead; counting positions over real tokens makes the features of a
sentence independent of its padding either way.
"""
import hashlib
from typing import Dict, Sequence

import torch
import torch.nn as nn


def bert_positions(keep):
    """Position ids that count only real tokens, so a sentence gets the same BERT positions
    whether it is padded on the left, on the right, or not at all. ``keep``: B x T bool."""
    return (keep.long().cumsum(dim=1) - 1).clamp(min=0)


def bert_weights_checksum(bert: nn.Module) -> str:
    """sha256 of a BERT's state dict (names, shapes and values in name order), which ties cached
    features to the exact weights that computed them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(bert.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class BertFeatures(nn.Module):
    """A HuggingFace ``BertModel`` returning chosen hidden layers of a padded batch.

    ``layers``: indices into BERT's hidden states, 0 the embedding output, -1 the last layer,
    -2 the second-to-last; BERT's layers above the deepest of them are removed. ``frozen``: the BERT gets no gradient and always runs in eval mode
    (no dropout), also while the NMT model trains, so its features are deterministic and can be
    cached (``feature_cache``).

    ``forward(src_tokens, padding_idx)``: ``src_tokens`` B x S BERT ids; returns
    ``{layer: B x S x C}`` (C = ``hidden_size``), zero at padding.
    """

    def __init__(self, bert, layers: Sequence[int], frozen: bool):
        super().__init__()
        self.layers = tuple(int(i) for i in layers)
        self.frozen = frozen
        depth = bert.config.num_hidden_layers
        for i in self.layers:
            if not -(depth + 1) <= i <= depth:
                raise ValueError(f"BERT layer {i} does not exist: the BERT has {depth} layers "
                                 f"(0 = embeddings, -1 = last)")
        # hidden-state index of each requested layer; the layers above the deepest are dropped
        # (they would cost time, and under DDP be parameters without gradient)
        self.index = {i: i % (depth + 1) for i in self.layers}
        bert.encoder.layer = bert.encoder.layer[:max(self.index.values(), default=0)]
        bert.config.num_hidden_layers = len(bert.encoder.layer)
        self.bert = bert
        self.hidden_size = bert.config.hidden_size
        self.max_positions = bert.config.max_position_embeddings
        if frozen:
            bert.requires_grad_(False)
            bert.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.bert.eval()
        return self

    def forward(self, src_tokens, padding_idx) -> Dict[int, torch.Tensor]:
        if src_tokens.size(1) > self.max_positions:
            raise ValueError(f"a source of {src_tokens.size(1)} tokens is longer than the "
                             f"{self.max_positions} positions of the BERT: binarise with a lower "
                             "MAX_TOKENS or set --max-source-positions")
        keep = src_tokens.ne(padding_idx)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.bert(input_ids=src_tokens, attention_mask=keep.long(),
                            position_ids=bert_positions(keep), output_hidden_states=True)
        mask = keep.unsqueeze(-1)
        return {i: out.hidden_states[self.index[i]].masked_fill(~mask, 0.0) for i in self.layers}
