"""AB-Net building blocks (Guo et al., "Incorporating BERT into Parallel Sequence Decoding with
Adapters", NeurIPS 2020): the two adapters and a BERT stack with adapters between its layers."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules import LayerNorm, MultiheadAttention

from ptnmt_fairseq.common.bert.features import bert_positions
from ptnmt_fairseq.common.compat import bert_attention_mask, run_bert_layer


class EncoderAdapter(nn.Module):
    """Eq. (4), AB-Net: Z = W1 · LN(H);  H_A = H + W2 · ReLU(Z).

    W1 and W2 have no bias and Xavier init, and LN uses BERT's eps 1e-12, as in the authors'
    ``BertLayerWithAdapter`` (github.com/lemmonation/abnet).
    """

    def __init__(self, hidden_dim, adapter_dim, dropout=0.0, eps=1e-12):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_dim, eps=eps)
        self.w1 = nn.Linear(hidden_dim, adapter_dim, bias=False)
        self.w2 = nn.Linear(adapter_dim, hidden_dim, bias=False)
        self.dropout = dropout
        nn.init.xavier_uniform_(self.w1.weight)
        nn.init.xavier_uniform_(self.w2.weight)

    def forward(self, hidden):  # B x T x C
        z = self.w1(self.layer_norm(hidden))
        delta = self.w2(F.relu(z))
        return hidden + F.dropout(delta, p=self.dropout, training=self.training)


class CrossAttentionAdapter(nn.Module):
    """Eq. (6), AB-Net: H_{l+1} = A_DEC(Y_BERT(H_l), H_E, H_E).

    fairseq's multi-head encoder-decoder attention with a post-LN residual, its dimension equal
    to the target BERT's hidden size; keys/values may come from a BERT of another width.
    """

    def __init__(self, hidden_dim, encoder_dim, heads, dropout=0.1, attention_dropout=0.0):
        super().__init__()
        self.attention = MultiheadAttention(
            hidden_dim, heads, kdim=encoder_dim, vdim=encoder_dim,
            dropout=attention_dropout, encoder_decoder_attention=True,
        )
        self.layer_norm = LayerNorm(hidden_dim)
        self.dropout = dropout

    def forward(self, hidden, encoder_states, encoder_padding_mask):
        """hidden: B x T x C; encoder_states: S x B x C_enc; encoder_padding_mask: B x S."""
        attended, _ = self.attention(
            query=hidden.transpose(0, 1), key=encoder_states, value=encoder_states,
            key_padding_mask=encoder_padding_mask, static_kv=True, need_weights=False,
        )
        attended = F.dropout(attended.transpose(0, 1), p=self.dropout, training=self.training)
        return self.layer_norm(hidden + attended)


def adapter_layer_ids(num_layers, top_k):
    """Layers followed by an adapter: all of them, or the top ``top_k`` (Table 3b, AB-Net)."""
    if top_k is None or top_k <= 0 or top_k >= num_layers:
        return list(range(num_layers))
    return list(range(num_layers - top_k, num_layers))


class AdaptedBert(nn.Module):
    """A HuggingFace BERT run layer by layer, each chosen layer followed by an adapter.

    ``adapters`` maps a layer index (as a string) to a module called as
    ``adapter(hidden, *adapter_inputs)``. ``prefix`` (B x P x C) is prepended after the
    embeddings, bypassing BERT's position embeddings and LayerNorm, as the authors do for the
    [LENGTH] token.
    """

    def __init__(self, bert, adapters: nn.ModuleDict):
        super().__init__()
        self.bert = bert
        self.adapters = adapters

    @property
    def hidden_dim(self):
        return self.bert.config.hidden_size

    def forward(self, tokens, keep, adapter_inputs=(), prefix=None):
        hidden = self.bert.embeddings(input_ids=tokens, position_ids=bert_positions(keep),
                                      token_type_ids=torch.zeros_like(tokens))
        if prefix is not None:
            hidden = torch.cat([prefix, hidden], dim=1)
            keep = torch.cat([keep.new_ones(prefix.shape[:2]), keep], dim=1)
        mask = bert_attention_mask(self.bert.config, hidden, keep)
        for i, layer in enumerate(self.bert.encoder.layer):
            hidden = run_bert_layer(layer, hidden, mask)
            if str(i) in self.adapters:
                hidden = self.adapters[str(i)](hidden, *adapter_inputs)
        return hidden
