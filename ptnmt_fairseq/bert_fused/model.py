"""BERT-fused NMT (Zhu et al., "Incorporating BERT into Neural Machine Translation", ICLR 2020).

A frozen source BERT encodes x into H_B (its layer ``--bert-output-layer``, the last by
default). Every encoder layer averages its self-attention with an attention over H_B, and every
decoder layer its encoder attention with another attention over H_B (Eq. 1-2 of the paper):

    h~_l = 1/2 (attn_S(h_{l-1}, h_{l-1}, h_{l-1}) + attn_B(h_{l-1}, H_B, H_B))     encoder
    s^_t = 1/2 (attn_E(s_t, H_E, H_E) + attn_B(s_t, H_B, H_B))                       decoder

and drop-net (Sec. 4, ``drop_net_weights``) mixes the two paths at random in training. The model
is fairseq's Transformer with each of those attentions replaced by ``BertFusedAttention``, which
keeps fairseq's parameter names, so a trained Transformer loads into it (``--warm-start-nmt``,
strictly, unlike the authors' non-strict load). Reference implementation: bert-nmt/bert-nmt
(``fairseq/models/transformer.py``, ``fairseq/modules/transformer_layer.py``).

Departures, for the record: BERT reads right-padded input with positions counted over real
tokens (the authors left-pad and shift positions); one dropout mask falls on the mixed attention
output (the authors drop each path apart, before the same residual sum and LayerNorm).
"""
import contextlib
import logging
from types import SimpleNamespace

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig, TransformerDecoderBase, TransformerEncoderBase, TransformerModel,
    base_architecture, transformer_iwslt_de_en, transformer_vaswani_wmt_en_de_big,
)
from fairseq.modules import MultiheadAttention
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase

from ptnmt_fairseq.common.bert.feature_cache import check_model_matches
from ptnmt_fairseq.common.bert.features import BertFeatures, bert_weights_checksum
from ptnmt_fairseq.common.bert.pretrained import bert_option, load_checked_bert
from ptnmt_fairseq.common.checkpoints import warm_start_strictly
from ptnmt_fairseq.common.modeling import log_parameter_counts

logger = logging.getLogger(__name__)


def drop_net_weights(p_net, training):
    """(r_1, r_2), the weights of the original path and of the BERT path (Sec. 4, drop-net).

    In training one U ~ U(0, 1) is drawn per call (per layer and forward pass): U < p_net/2 keeps
    the original path only (1, 0), U > 1 - p_net/2 the BERT path only (0, 1), otherwise their
    mean (1/2, 1/2); in inference always the mean. p_net = 0 is the plain average, p_net = 1
    (the paper's choice) never averages in training. The authors' ``--encoder-bert-dropout-ratio``
    is p_net/2 (their README's 0.25 ... 0.5 are p_net 0.5 ... 1), and without
    ``--encoder-bert-dropout`` their code *sums* the two paths instead of averaging them.
    """
    if not training or p_net == 0:
        return 0.5, 0.5
    u = float(torch.rand(()))
    if u < p_net / 2:
        return 1.0, 0.0
    if u > 1 - p_net / 2:
        return 0.0, 1.0
    return 0.5, 0.5


class BertFusedAttention(MultiheadAttention):
    """fairseq's multi-head attention (its parameters, its call) plus ``bert_attn``, an attention
    over BERT's output with its own parameters; the two outputs are mixed by drop-net.

    ``bert_input`` = (H_B: S_B x B x C_bert, padding mask: B x S_B) is set by the encoder or
    decoder around each forward pass. In incremental decoding ``bert_attn`` caches its keys and
    values (static, as for the encoder attention). Returns (T x B x embed_dim, the original
    path's attention weights).
    """

    def __init__(self, embed_dim, num_heads, bert_dim, drop_net, dropout=0.0, **kwargs):
        super().__init__(embed_dim, num_heads, dropout=dropout, **kwargs)
        self.bert_attn = MultiheadAttention(embed_dim, num_heads, kdim=bert_dim, vdim=bert_dim,
                                            dropout=dropout, encoder_decoder_attention=True)
        self.drop_net = drop_net
        self.bert_input = None

    def forward(self, query, key, value, key_padding_mask=None, incremental_state=None,
                need_weights=True, static_kv=False, attn_mask=None, before_softmax=False,
                need_head_weights=False):
        x, attn = super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                  incremental_state=incremental_state, need_weights=need_weights,
                                  static_kv=static_kv, attn_mask=attn_mask,
                                  before_softmax=before_softmax,
                                  need_head_weights=need_head_weights)
        if self.bert_input is None:
            raise RuntimeError("BertFusedAttention called without BERT's output: run it through "
                               "BertFusedEncoder / BertFusedDecoder")
        bert_out, bert_padding_mask = self.bert_input
        y, _ = self.bert_attn(query, bert_out, bert_out, key_padding_mask=bert_padding_mask,
                              incremental_state=incremental_state, static_kv=True,
                              need_weights=False)
        r1, r2 = drop_net_weights(self.drop_net, self.training)
        return r1 * x + r2 * y, attn  # Eq. (1)/(2) with drop-net


class BertFusedEncoderLayer(TransformerEncoderLayerBase):
    def __init__(self, cfg, fusion):
        self.fusion = fusion  # set before the parent builds the attention
        super().__init__(cfg)

    def build_self_attention(self, embed_dim, cfg):
        return BertFusedAttention(embed_dim, cfg.encoder.attention_heads, self.fusion.bert_dim,
                                  self.fusion.drop_net, dropout=cfg.attention_dropout,
                                  self_attention=True)


class BertFusedDecoderLayer(TransformerDecoderLayerBase):
    def __init__(self, cfg, fusion, no_encoder_attn=False):
        self.fusion = fusion
        super().__init__(cfg, no_encoder_attn=no_encoder_attn)

    def build_encoder_attention(self, embed_dim, cfg):
        return BertFusedAttention(embed_dim, cfg.decoder.attention_heads, self.fusion.bert_dim,
                                  self.fusion.drop_net, kdim=cfg.encoder.embed_dim,
                                  vdim=cfg.encoder.embed_dim, dropout=cfg.attention_dropout,
                                  encoder_decoder_attention=True)


def every_layer(layers):
    """All layers, also of a LayerDropModuleList (iterating one in training skips layers)."""
    return [layers[i] for i in range(len(layers))]


@contextlib.contextmanager
def bert_inputs(attentions, bert_out, bert_padding_mask):
    for attention in attentions:
        attention.bert_input = (bert_out, bert_padding_mask)
    try:
        yield
    finally:
        for attention in attentions:
            attention.bert_input = None


class BertFusedEncoder(TransformerEncoderBase):
    """fairseq's encoder with ``BertFusedEncoderLayer``s and the frozen BERT. ``forward`` also
    takes ``bert_features`` (``{str(layer): B x S x C}`` from ``--bert-feature-cache``); its
    output adds ``bert_out`` (S x B x C_bert) and ``bert_padding_mask`` (B x S)."""

    def __init__(self, cfg, dictionary, embed_tokens, fusion):
        self.fusion = fusion
        super().__init__(cfg, dictionary, embed_tokens)

    def build_encoder_layer(self, cfg):
        if cfg.checkpoint_activations:
            raise ValueError("bert_fused does not support --checkpoint-activations")
        return BertFusedEncoderLayer(cfg, self.fusion)

    def attach_bert(self, bert_features, output_layer):
        self.bert_features, self.bert_output_layer = bert_features, output_layer

    def max_positions(self):
        return min(super().max_positions(), self.bert_features.max_positions)

    def bert_output(self, src_tokens, bert_features):
        if bert_features is not None:
            states = bert_features[str(self.bert_output_layer)]
        else:
            states = self.bert_features(src_tokens, self.padding_idx)[self.bert_output_layer]
        dtype = self.embed_tokens.weight.dtype
        return states.to(dtype).transpose(0, 1), src_tokens.eq(self.padding_idx)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens=False,
                token_embeddings=None, bert_features=None):
        bert_out, bert_padding_mask = self.bert_output(src_tokens, bert_features)
        with bert_inputs([layer.self_attn for layer in every_layer(self.layers)], bert_out,
                         bert_padding_mask):
            out = super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        out["bert_out"], out["bert_padding_mask"] = [bert_out], [bert_padding_mask]
        return out

    def reorder_encoder_out(self, encoder_out, new_order):
        reordered = super().reorder_encoder_out(encoder_out, new_order)
        reordered["bert_out"] = [encoder_out["bert_out"][0].index_select(1, new_order)]
        reordered["bert_padding_mask"] = [
            encoder_out["bert_padding_mask"][0].index_select(0, new_order)]
        return reordered


class BertFusedDecoder(TransformerDecoderBase):
    """fairseq's decoder with ``BertFusedDecoderLayer``s, attending over ``encoder_out``'s
    ``bert_out``."""

    def __init__(self, cfg, dictionary, embed_tokens, fusion, no_encoder_attn=False,
                 output_projection=None):
        self.fusion = fusion
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn,
                         output_projection=output_projection)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return BertFusedDecoderLayer(cfg, self.fusion, no_encoder_attn)

    def extract_features(self, prev_output_tokens, encoder_out, incremental_state=None,
                         full_context_alignment=False, alignment_layer=None,
                         alignment_heads=None):
        with bert_inputs([layer.encoder_attn for layer in every_layer(self.layers)],
                         encoder_out["bert_out"][0], encoder_out["bert_padding_mask"][0]):
            return super().extract_features(prev_output_tokens, encoder_out, incremental_state,
                                            full_context_alignment, alignment_layer,
                                            alignment_heads)


@register_model("bert_fused")
class BertFusedModel(TransformerModel):
    """fairseq's Transformer with BERT-fused attentions; see the module docstring."""

    _fusion = None  # set while build_model runs: fairseq hands build_encoder a TransformerConfig

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--source-bert", type=str, metavar="NAME_OR_DIR",
                            help="the frozen source-side HuggingFace BERT")
        parser.add_argument("--bert-output-layer", type=int, metavar="L",
                            help="BERT hidden layer attended to (default -1, the last)")
        parser.add_argument("--drop-net", type=float, metavar="P",
                            help="p_net of drop-net, Sec. 4 (paper: 1.0; the authors' "
                                 "--encoder-bert-dropout-ratio is p_net / 2)")
        parser.add_argument("--warm-start-nmt", type=str, metavar="CHECKPOINT",
                            help="initialise from a trained fairseq Transformer checkpoint, "
                                 "strictly (the authors' --warmup-from-nmt, loaded non-strictly)")

    @classmethod
    def build_model(cls, args, task):
        bert_fused_base(args)
        if not 0 <= args.drop_net <= 1:
            raise ValueError(f"--drop-net {args.drop_net}: p_net must be in [0, 1]")
        bert = load_checked_bert(bert_option(args, "--source-bert"), "--source-bert",
                                 task.source_dictionary, "source")
        cls._fusion = SimpleNamespace(bert_dim=bert.config.hidden_size, drop_net=args.drop_net)
        try:
            model = super().build_model(args, task)
        finally:
            cls._fusion = None
        model.encoder.attach_bert(BertFeatures(bert, [args.bert_output_layer], frozen=True),
                                  args.bert_output_layer)
        model.warm_start_path = args.warm_start_nmt
        log_parameter_counts(model, "BERT-fused", f"p_net {args.drop_net}")
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return BertFusedEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens,
                                cls._fusion)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return BertFusedDecoder(TransformerConfig.from_namespace(args), tgt_dict, embed_tokens,
                                cls._fusion, no_encoder_attn=args.no_cross_attention)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, bert_features=None,
                return_all_hiddens=True, features_only=False, alignment_layer=None,
                alignment_heads=None):
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths,
                                   return_all_hiddens=return_all_hiddens,
                                   bert_features=bert_features)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out,
                            features_only=features_only, alignment_layer=alignment_layer,
                            alignment_heads=alignment_heads, src_lengths=src_lengths,
                            return_all_hiddens=return_all_hiddens)

    def warm_start(self):
        """Called by the task when training starts (not when a checkpoint of this model loads):
        every Transformer tensor from ``--warm-start-nmt``; BERT and the BERT attentions new."""
        if not self.warm_start_path:
            return
        new = warm_start_strictly(self, self.warm_start_path, is_bert_fused_addition)
        logger.info("warm start from %s: %d tensors new (BERT and its attentions)",
                    self.warm_start_path, len(new))

    def check_bert_feature_cache(self, manifest, cache_dir):
        features = self.encoder.bert_features
        check_model_matches(manifest, cache_dir, bert_weights_checksum(features.bert),
                            features.layers, trainable=False)


def is_bert_fused_addition(name):
    """Tensors a Transformer checkpoint cannot have: BERT's and the BERT attentions'."""
    return name.startswith("encoder.bert_features.") or ".bert_attn." in name


def bert_fused_defaults(args):
    args.source_bert = getattr(args, "source_bert", None)
    args.bert_output_layer = getattr(args, "bert_output_layer", -1)
    args.drop_net = getattr(args, "drop_net", 1.0)
    args.warm_start_nmt = getattr(args, "warm_start_nmt", None)


@register_model_architecture("bert_fused", "bert_fused_base")
def bert_fused_base(args):
    """Transformer base (WMT14 En-De/En-Fr in the paper use transformer_big: bert_fused_big)."""
    bert_fused_defaults(args)
    base_architecture(args)


@register_model_architecture("bert_fused", "bert_fused_iwslt_de_en")
def bert_fused_iwslt_de_en(args):
    """The paper's IWSLT model (Sec. 5.1): d 512, FFN 1024, 4 heads, 6+6 layers."""
    bert_fused_defaults(args)
    transformer_iwslt_de_en(args)


@register_model_architecture("bert_fused", "bert_fused_big")
def bert_fused_big(args):
    bert_fused_defaults(args)
    transformer_vaswani_wmt_en_de_big(args)
