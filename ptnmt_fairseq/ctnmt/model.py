"""CTNMT (Yang et al., "Towards Making the Most of BERT in Neural Machine Translation", AAAI 2020):
a Transformer whose encoder reads a source BERT, with the paper's three strategies each
switchable, so the ablation rows of its Table 1 can be rerun:

* asymptotic distillation (Sec. 3.1, Eq. 4-5): ``--asymptotic-distillation``; the loss is in the
  ``ctnmt_distill`` criterion, the distance here;
* dynamic switch (Sec. 3.2, Eq. 6-7): ``--bert-fusion switch``, a gate between BERT's hidden
  states and the NMT embedding layer (``input``: BERT's states replace the embeddings, g = 1;
  ``none``: BERT does not feed the encoder);
* rate-scheduled learning (Sec. 3.3, Eq. 8-10): BERT's weights form their own optimizer
  parameter group, which the ``rate_scheduled`` lr scheduler drives; ``--freeze-bert`` is rho = 0
  done exactly (no gradient, eval mode, cacheable features).

The source side is BERT's vocabulary (``--task translation_bert``), so the NMT encoder and BERT
read the same ids position by position. Public reproduction: bytedance/neurst
(``neurst/models/ctnmt.py``, ``neurst/layers/...``); departures from it are noted where they occur.
"""
import logging

import torch
import torch.nn as nn
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig, TransformerEncoderBase, TransformerModel, base_architecture,
    transformer_vaswani_wmt_en_de_big,
)

from ptnmt_fairseq.common.bert.feature_cache import check_model_matches
from ptnmt_fairseq.common.bert.features import BertFeatures, bert_weights_checksum
from ptnmt_fairseq.common.bert.pretrained import bert_option, load_checked_bert
from ptnmt_fairseq.common.modeling import log_parameter_counts
from ptnmt_fairseq.ctnmt.lr_scheduler import BERT_PARAM_GROUP

logger = logging.getLogger(__name__)


class DynamicSwitch(nn.Module):
    """Eq. (6)-(7), CTNMT: g = sigma(W h_lm + U h_nmt + b); h = g * h_lm + (1 - g) * h_nmt.

    ``h_lm`` (B x S x d_bert) is first projected to the model width by P (identity when the widths
    are equal; a linear map otherwise, as NeurST does for a BERT wider than the encoder). W has no
    bias and U carries b, as in NeurST. With ``gate=False`` (``--bert-fusion input``) the output
    is P h_lm (g = 1). ``h_nmt``: B x S x d_model. Returns B x S x d_model.
    """

    def __init__(self, bert_dim, model_dim, gate=True):
        super().__init__()
        self.project = nn.Identity() if bert_dim == model_dim else nn.Linear(bert_dim, model_dim)
        self.gate = gate
        if gate:
            self.w = nn.Linear(model_dim, model_dim, bias=False)
            self.u = nn.Linear(model_dim, model_dim)

    def forward(self, h_lm, h_nmt):
        h_lm = self.project(h_lm)
        if not self.gate:
            return h_lm
        g = torch.sigmoid(self.w(h_lm) + self.u(h_nmt))  # Eq. (6)
        return g * h_lm + (1 - g) * h_nmt  # Eq. (7)


def distillation_distance(student, teacher, keep):
    """Eq. (4), CTNMT: the squared L2 distance ||h_lm - h_nmt||^2 per real source token, averaged
    over real tokens. ``student``, ``teacher``: B x S x C; ``keep``: B x S bool. The teacher gets
    no gradient (a stop-gradient on BERT's states, as in NeurST)."""
    per_token = (student.float() - teacher.detach().float()).pow(2).sum(-1)  # fp16/bf16 overflow
    return per_token.masked_select(keep).mean()


class CtnmtEncoder(TransformerEncoderBase):
    """fairseq's Transformer encoder with BERT's states fused into its embedding layer (after the
    scaled token embeddings and positions, before the first layer).

    ``forward`` also takes ``bert_features`` (``{str(layer): B x S x C}``, cached by
    ``--bert-feature-cache``) instead of running BERT, and ``bert_distill`` (training with
    asymptotic distillation): the output then carries ``bert_distill_target`` (B x S x C).
    """

    def attach_bert(self, bert_features, fusion, fusion_layer, distill_layer):
        self.bert_features = bert_features
        self.fusion_layer, self.distill_layer = fusion_layer, distill_layer
        self.fusion = (None if fusion == "none" else
                       DynamicSwitch(bert_features.hidden_size, self.embed_tokens.embedding_dim,
                                     gate=(fusion == "switch")))
        self._fusion_input = None

    def max_positions(self):
        return min(super().max_positions(), self.bert_features.max_positions)

    def bert_hidden(self, src_tokens, bert_features):
        if bert_features is not None:
            return {int(layer): states for layer, states in bert_features.items()}
        return self.bert_features(src_tokens, self.padding_idx)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens=False,
                token_embeddings=None, bert_features=None, bert_distill=False):
        if self.fusion is None and not bert_distill:
            return super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        hidden = self.bert_hidden(src_tokens, bert_features)
        if self.fusion is not None:
            self._fusion_input = hidden[self.fusion_layer]
        try:
            out = super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        finally:
            self._fusion_input = None
        if bert_distill:
            out["bert_distill_target"] = [hidden[self.distill_layer]]
        return out

    def forward_embedding(self, src_tokens, token_embedding=None):
        x, embed = super().forward_embedding(src_tokens, token_embedding)
        if self._fusion_input is not None:
            x = self.fusion(self._fusion_input.to(x.dtype), x)
        return x, embed


@register_model("ctnmt")
class CtnmtModel(TransformerModel):
    """fairseq's Transformer with CTNMT's source BERT; see the module docstring."""

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--source-bert", type=str, metavar="NAME_OR_DIR",
                            help="source-side HuggingFace BERT, by hub name or directory")
        parser.add_argument("--bert-fusion", choices=("switch", "input", "none"),
                            help="switch: dynamic switch, Eq. (6)-(7); input: BERT's states "
                                 "replace the embeddings (g = 1); none: no fusion")
        parser.add_argument("--bert-fusion-layer", type=int, metavar="L",
                            help="BERT hidden layer fused (paper, Sec. 3.2: -2, the second-to-"
                                 "last; NeurST: -1)")
        parser.add_argument("--freeze-bert", action="store_true",
                            help="rho = 0 exactly: BERT gets no gradient and runs in eval mode")
        parser.add_argument("--asymptotic-distillation", action="store_true",
                            help="add the distance of Eq. (4) (criterion ctnmt_distill)")
        parser.add_argument("--distill-bert-layer", type=int, metavar="L",
                            help="BERT layer the encoder is distilled towards (default -1)")
        parser.add_argument("--distill-encoder-layer", type=int, metavar="L",
                            help="NMT encoder layer distilled, 0 = embeddings (default -1: top)")

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return CtnmtEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_model(cls, args, task):
        ctnmt_base(args)
        if args.bert_fusion == "none" and not args.asymptotic_distillation:
            raise ValueError("--bert-fusion none without --asymptotic-distillation leaves BERT "
                             "unused: this is the plain transformer (use --arch transformer)")
        bert = load_checked_bert(bert_option(args, "--source-bert"), "--source-bert",
                                 task.source_dictionary, "source")
        model = super().build_model(args, task)
        # BERT only teaches (no fusion): nothing would train it, so it runs frozen, in eval mode.
        frozen = args.freeze_bert or args.bert_fusion == "none"
        layers = ([args.bert_fusion_layer] if args.bert_fusion != "none" else []) + (
            [args.distill_bert_layer] if args.asymptotic_distillation else [])
        features = BertFeatures(bert, sorted(set(layers)), frozen=frozen)
        model.encoder.attach_bert(features, args.bert_fusion, args.bert_fusion_layer,
                                  args.distill_bert_layer)
        for param in bert.parameters():
            param.param_group = BERT_PARAM_GROUP
        if not frozen:
            freeze_unreachable(model, features, args)
        model.distill_projection, model.distill_encoder_layer = None, args.distill_encoder_layer
        if args.asymptotic_distillation:
            # Q: NMT width -> BERT width, a linear map when they differ (NeurST), else none.
            width = args.encoder_embed_dim
            model.distill_projection = (nn.Identity() if width == features.hidden_size
                                        else nn.Linear(width, features.hidden_size))
        log_parameter_counts(model, "CTNMT")
        return model

    def forward(self, src_tokens, src_lengths, prev_output_tokens, bert_features=None,
                return_all_hiddens=True, features_only=False, alignment_layer=None,
                alignment_heads=None):
        distill = self.distill_projection is not None
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths,
                                   return_all_hiddens=return_all_hiddens or distill,
                                   bert_features=bert_features, bert_distill=distill)
        x, extra = self.decoder(prev_output_tokens, encoder_out=encoder_out,
                                features_only=features_only, alignment_layer=alignment_layer,
                                alignment_heads=alignment_heads, src_lengths=src_lengths,
                                return_all_hiddens=return_all_hiddens)
        if distill:
            extra["distill_distance"] = self.distillation(encoder_out)
        return x, extra

    def distillation(self, encoder_out):
        """Eq. (4) between encoder state ``--distill-encoder-layer`` (projected by Q; -1 the
        encoder's output, after the final LayerNorm of a pre-norm encoder) and BERT's layer
        ``--distill-bert-layer``; a scalar."""
        if self.distill_encoder_layer == -1:
            student = encoder_out["encoder_out"][0].transpose(0, 1)
        else:
            student = encoder_out["encoder_states"][self.distill_encoder_layer].transpose(0, 1)
        teacher = encoder_out["bert_distill_target"][0].to(student.dtype)
        keep = ~encoder_out["encoder_padding_mask"][0]
        return distillation_distance(self.distill_projection(student), teacher, keep)

    def check_bert_feature_cache(self, manifest, cache_dir):
        features = self.encoder.bert_features
        check_model_matches(manifest, cache_dir, bert_weights_checksum(features.bert),
                            features.layers, trainable=not features.frozen)


def freeze_unreachable(model, features, args):
    """Freeze what no loss reaches when BERT trains: BERT's layers above the fused one (they
    only feed the distillation teacher, behind its stop-gradient) and, with ``--bert-fusion
    input``, the encoder's own token embeddings (replaced by BERT's states). Trainable weights
    without a gradient would also stop torch's DDP ("Expected to have finished reduction")."""
    fused = features.index[args.bert_fusion_layer]
    for layer in features.bert.encoder.layer[fused:]:
        layer.requires_grad_(False)
    if args.bert_fusion == "input" and model.encoder.embed_tokens is not model.decoder.embed_tokens:
        model.encoder.embed_tokens.requires_grad_(False)


def ctnmt_defaults(args):
    args.source_bert = getattr(args, "source_bert", None)
    args.bert_fusion = getattr(args, "bert_fusion", "switch")
    args.bert_fusion_layer = getattr(args, "bert_fusion_layer", -2)
    args.freeze_bert = getattr(args, "freeze_bert", False)
    args.asymptotic_distillation = getattr(args, "asymptotic_distillation", False)
    args.distill_bert_layer = getattr(args, "distill_bert_layer", -1)
    args.distill_encoder_layer = getattr(args, "distill_encoder_layer", -1)


@register_model_architecture("ctnmt", "ctnmt_base")
def ctnmt_base(args):
    """Transformer base, d 512 (Sec. 4.1: Transformer base with BERT-base; the states of the
    768-wide BERT are projected, Eq. (6) P)."""
    ctnmt_defaults(args)
    base_architecture(args)


@register_model_architecture("ctnmt", "ctnmt_big")
def ctnmt_big(args):
    """Transformer big (d 1024, 16 heads), the paper's WMT14 En-Fr model (Sec. 4.1)."""
    ctnmt_defaults(args)
    transformer_vaswani_wmt_en_de_big(args)


@register_model_architecture("ctnmt", "ctnmt_tiny")
def ctnmt_tiny(args):
    """3+3 layers, d 256, pre-norm: the CPU recipe's size."""
    args.encoder_layers = getattr(args, "encoder_layers", 3)
    args.decoder_layers = getattr(args, "decoder_layers", 3)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 1024)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 1024)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    ctnmt_base(args)
