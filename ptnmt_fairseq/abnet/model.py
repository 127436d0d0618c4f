"""AB-Net: frozen source and target BERTs joined by adapters, decoded with Mask-Predict.

Guo, Zhang, Xu, Wei, Chen, Chen. "Incorporating BERT into Parallel Sequence Decoding with
Adapters." NeurIPS 2020. Registered models:

* ``abnet``           X-BERT + encoder adapters (Eq. 4, 5) -> Y-BERT + cross-attention adapters
                      (Eq. 6); [LENGTH] token; trained as a conditional MLM (Eq. 3) and decoded
                      with Mask-Predict by fairseq's iterative refinement generator.
* ``abnet_enc``       AB-Net-Enc: X-BERT + encoder adapters -> fairseq Transformer decoder,
                      autoregressive, beam search (Table 3a).
* ``abnet_enc_cmlm``  AB-Net-Enc with fairseq's Mask-Predict (CMLM) Transformer decoder.

``--finetune-bert`` is AB-Net FB: the BERTs are trained too. The vanilla Mask-Predict baseline is
fairseq's own ``cmlm_transformer``.

The models subclass fairseq's NAT family, which is configured through ``add_args`` and
architecture presets; we follow it so every ``--iter-decode-*`` option keeps working.
"""
import logging
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.models import FairseqDecoder, FairseqEncoder, register_model, register_model_architecture
from fairseq.models.nat import NATransformerDecoder
from fairseq.models.nat.cmlm_transformer import (
    CMLMNATransformerModel, _skeptical_unmasking, cmlm_base_architecture,
)
from fairseq.models.transformer import TransformerDecoder, TransformerModel, base_architecture
from transformers import BertForMaskedLM

from ptnmt_fairseq.abnet.modules import (
    AdaptedBert, CrossAttentionAdapter, EncoderAdapter, adapter_layer_ids,
)
from ptnmt_fairseq.common.bert_dictionary import check_matches_bert
from ptnmt_fairseq.common.pretrained import bert_vocab_file, load_bert_model, resolve_bert

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Encoder: X-BERT with adapters (Eq. 4, 5) and the [LENGTH] token (Sec. 3.3)
# ----------------------------------------------------------------------------------------------
class AbnetEncoder(FairseqEncoder):
    def __init__(self, args, dictionary, bert, with_length_token):
        super().__init__(dictionary)
        layers = adapter_layer_ids(bert.config.num_hidden_layers, args.encoder_adapter_top_k)
        adapters = nn.ModuleDict({
            str(i): EncoderAdapter(bert.config.hidden_size, args.encoder_adapter_dim,
                                   args.adapter_dropout, bert.config.layer_norm_eps)
            for i in layers
        })
        self.bert = AdaptedBert(bert, adapters)
        self.padding_idx = dictionary.pad()
        self.max_source_positions = bert.config.max_position_embeddings
        # Sec. 3.3: "We add a special [LENGTH] token to the encoder input, and take its encoder
        # output as the representation, based on which the target length is predicted."
        # Authors: one nn.Embedding(1024, d); row 0 is the input token, the whole table is the
        # output projection, and class 0 (an empty target) is impossible.
        self.embed_lengths = (
            nn.Embedding(args.max_length_classes, bert.config.hidden_size)
            if with_length_token else None
        )
        if self.embed_lengths is not None:
            nn.init.normal_(self.embed_lengths.weight, std=0.02)

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        keep = src_tokens.ne(self.padding_idx)  # B x S
        prefix = None
        if self.embed_lengths is not None:
            prefix = self.embed_lengths.weight[:1].expand(src_tokens.size(0), 1, -1)
        hidden = self.bert(src_tokens, keep, prefix=prefix)  # B x (P+S) x C
        length_logits = []
        if self.embed_lengths is not None:
            logits = F.linear(hidden[:, 0], self.embed_lengths.weight)  # B x max_length_classes
            length_logits = [logits.masked_fill(torch.arange(logits.size(1),
                                                             device=logits.device) == 0,
                                                float("-inf"))]
            hidden = hidden[:, 1:]
        return {
            "encoder_out": [hidden.transpose(0, 1)],  # S x B x C
            "encoder_padding_mask": [~keep],  # B x S
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
            "length_logits": length_logits,  # B x max_length_classes
        }

    def reorder_encoder_out(self, encoder_out, new_order):
        return {
            "encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
            "length_logits": [x.index_select(0, new_order) for x in encoder_out["length_logits"]],
        }

    def max_positions(self):
        return self.max_source_positions  # [LENGTH] bypasses the position embeddings


# ----------------------------------------------------------------------------------------------
# Decoder: Y-BERT, bidirectional, with cross-attention adapters (Eq. 6) and its MLM head
# ----------------------------------------------------------------------------------------------
class AbnetDecoder(FairseqDecoder):
    def __init__(self, args, dictionary, masked_lm: BertForMaskedLM, encoder_dim):
        super().__init__(dictionary)
        config = masked_lm.config
        layers = adapter_layer_ids(config.num_hidden_layers, args.decoder_adapter_top_k)
        adapters = nn.ModuleDict({
            str(i): CrossAttentionAdapter(config.hidden_size, encoder_dim,
                                          args.decoder_adapter_heads, args.adapter_dropout,
                                          args.attention_dropout)
            for i in layers
        })
        self.bert = AdaptedBert(masked_lm.bert, adapters)
        # The vocabulary projection is Y-BERT's own MLM head, tied to its word embeddings.
        self.mlm_head = masked_lm.cls
        self.padding_idx = dictionary.pad()
        self.max_target_positions = config.max_position_embeddings
        # Decoding never predicts [PAD] [CLS] [SEP] [MASK]: they are never masked targets, and a
        # predicted [MASK] would stay in the output (the canvas keeps its own [CLS]/[SEP]).
        self.register_buffer("unpredictable", torch.tensor(
            [dictionary.pad(), dictionary.bos(), dictionary.eos(), dictionary.mask()]),
            persistent=False)
        self.length_loss_factor = args.length_loss_factor
        self.src_embedding_copy = False  # asserted off by fairseq's CMLM forward
        self.ensemble_models = None

    def forward(self, normalize, encoder_out, prev_output_tokens, step=0, **unused):
        features = self.extract_features(prev_output_tokens, encoder_out)
        logits = self.mlm_head(features)  # B x T x V
        if not normalize:  # training: fairseq's nat_loss smooths over the full vocabulary
            return logits
        return F.log_softmax(logits.index_fill(-1, self.unpredictable, float("-inf")), -1)

    def masked_lprobs(self, prev_output_tokens, encoder_out, masks):
        """Decoding log-probs at the ``masks`` positions only (N_masked x V): the MLM head's
        vocabulary projection dominates decoding time, and unmasked slots do not need it."""
        features = self.extract_features(prev_output_tokens, encoder_out)[masks]
        logits = self.mlm_head(features).index_fill(-1, self.unpredictable, float("-inf"))
        return F.log_softmax(logits, -1)

    def extract_features(self, prev_output_tokens, encoder_out, **unused):
        keep = prev_output_tokens.ne(self.padding_idx)
        return self.bert(
            prev_output_tokens, keep,
            adapter_inputs=(encoder_out["encoder_out"][0], encoder_out["encoder_padding_mask"][0]),
        )

    def forward_length(self, normalize, encoder_out):
        logits = encoder_out["length_logits"][0]
        return F.log_softmax(logits, -1) if normalize else logits

    def forward_length_prediction(self, length_out, encoder_out, tgt_tokens=None):
        """Target length = tokens incl. [CLS] and [SEP], in training and decoding alike."""
        max_class = length_out.size(-1) - 1
        if tgt_tokens is not None:
            lengths = tgt_tokens.ne(self.padding_idx).sum(1).long()
            too_long = lengths > max_class
            if too_long.any():
                raise ValueError(
                    f"target of {int(lengths.max())} tokens exceeds --max-length-classes "
                    f"{max_class + 1}: raise it or pass --max-target-positions {max_class}"
                )
            return lengths
        return length_out.argmax(-1)

    def max_positions(self):
        return self.max_target_positions


# ----------------------------------------------------------------------------------------------
# Shared construction
# ----------------------------------------------------------------------------------------------
def add_bert_adapter_args(parser, decoder_side):
    parser.add_argument("--source-bert", type=str, metavar="NAME_OR_DIR",
                        help="source-side HuggingFace BERT (X-BERT), by hub name or directory")
    parser.add_argument("--encoder-adapter-dim", type=int, metavar="N",
                        help="inner dimension d_Aenc of the encoder adapters, Eq. (4) "
                             "(paper: 512 IWSLT, 2048 WMT)")
    parser.add_argument("--encoder-adapter-top-k", type=int, metavar="K",
                        help="adapters after the top K encoder layers only (0: all)")
    parser.add_argument("--adapter-dropout", type=float, metavar="P")
    parser.add_argument("--finetune-bert", action="store_true",
                        help="AB-Net FB: train the BERT weights too (default: frozen)")
    if decoder_side:
        parser.add_argument("--target-bert", type=str, metavar="NAME_OR_DIR",
                            help="target-side HuggingFace BERT (Y-BERT), by hub name or directory")
        parser.add_argument("--decoder-adapter-heads", type=int, metavar="N",
                            help="heads of the cross-attention adapters, Eq. (6)")
        parser.add_argument("--decoder-adapter-top-k", type=int, metavar="K",
                            help="cross-attention adapters after the top K decoder layers (0: all)")
        parser.add_argument("--max-length-classes", type=int, metavar="N",
                            help="rows of the [LENGTH] embedding = length classes (authors: 1024)")


def require_bert(args, name):
    value = getattr(args, name.replace("-", "_"), None)
    if not value:
        raise ValueError(f"--{name} is required: a HuggingFace BERT name or directory")
    return value


def check_vocabulary(dictionary, bert, option, role):
    check_matches_bert(dictionary, bert_vocab_file(bert, option), role)


def freeze_berts(model, finetune):
    """Freeze every BERT weight unless AB-Net FB; adapters, [LENGTH] and fresh heads train."""
    for module in (m for m in model.modules() if isinstance(m, AdaptedBert)):
        module.bert.requires_grad_(finetune)


def log_parameter_counts(model, name):
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    message = f"{name}: {trained:,} trainable parameters of {total:,} ({100 * trained / total:.1f}%)"
    logger.info(message)
    print(message, flush=True)


def load_masked_lm(name, option):
    """Y-BERT with its MLM head. A checkpoint saved as a plain BertModel has no head weights:
    transformers creates them fresh, so those (and only those) must be trained."""
    masked_lm, info = BertForMaskedLM.from_pretrained(
        resolve_bert(name, option), local_files_only=True, output_loading_info=True)
    fresh = sorted(k for k in info["missing_keys"] if k.startswith("cls."))
    return masked_lm, fresh


class MaskPredictOut(NamedTuple):
    """fairseq's ``DecoderOut`` plus the length log-probs, kept for the top-B length beam."""

    output_tokens: torch.Tensor
    output_scores: torch.Tensor
    attn: Optional[torch.Tensor]
    step: int
    max_step: int
    history: Optional[list]
    length_lprobs: Optional[torch.Tensor] = None


def masked_canvas(lengths, bos, eos, pad, mask):
    """[CLS] [MASK] ... [MASK] [SEP] of each length (incl. [CLS]/[SEP]), right-padded."""
    lengths = lengths.clamp(min=2)
    positions = utils.new_arange(lengths, int(lengths.max()))
    tokens = lengths.new_full((lengths.size(0), positions.size(0)), pad)
    tokens.masked_fill_(positions[None, :] < lengths[:, None], mask)
    tokens[:, 0] = bos
    tokens.scatter_(1, lengths[:, None] - 1, eos)
    return tokens


class MaskPredictWithMaskToken:
    """Mask-Predict on a BERT vocabulary, on top of fairseq's CMLM.

    * fairseq's CMLM uses ``self.unk`` as its mask symbol. The decoder must see [MASK], not
      [UNK] (a real word class), so we point ``self.unk`` at [MASK].
    * fairseq's adaptive stop ends a sentence when a step's output equals its input. For CMLM
      that output is already re-masked, so the sentence ends with [MASK]s in it. We return the
      unmasked prediction of a stable sentence instead; the next step sees no [MASK], leaves it
      as it is, and the generator stops it there.
    """

    def use_mask_token(self):
        self.unk = self.tgt_dict.mask()

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **kwargs):
        step, max_step = decoder_out.step, decoder_out.max_step
        tokens_in = decoder_out.output_tokens
        masks = tokens_in.eq(self.unk)
        if hasattr(self.decoder, "masked_lprobs"):  # only the [MASK] slots need the vocabulary
            new_scores, new_tokens = self.decoder.masked_lprobs(tokens_in, encoder_out, masks).max(-1)
        else:
            new_scores, new_tokens = self.decoder(
                normalize=True, prev_output_tokens=tokens_in, encoder_out=encoder_out).max(-1)
            new_scores, new_tokens = new_scores[masks], new_tokens[masks]
        tokens = tokens_in.masked_scatter(masks, new_tokens)
        scores = decoder_out.output_scores.masked_scatter(masks, new_scores)
        history = decoder_out.history
        if history is not None:
            history.append(tokens.clone())
        if step + 1 < max_step:
            # Mask-Predict: re-mask the n = (|y| - 2)(1 - (t+1)/T) least confident tokens
            remask = _skeptical_unmasking(scores, tokens.ne(self.pad), 1 - (step + 1) / max_step)
            remask &= masks.any(1, keepdim=True)  # a canvas without [MASK] is final
            remasked = tokens.masked_fill(remask, self.unk)
            stable = remasked.eq(tokens_in).all(1, keepdim=True)
            tokens = torch.where(stable, tokens, remasked)
            scores = scores.masked_fill(remask & ~stable, 0.0)
            if history is not None:
                history.append(tokens.clone())
        return decoder_out._replace(output_tokens=tokens, output_scores=scores, attn=None,
                                    history=history)


# ----------------------------------------------------------------------------------------------
# AB-Net
# ----------------------------------------------------------------------------------------------
@register_model("abnet")
class AbnetModel(MaskPredictWithMaskToken, CMLMNATransformerModel):
    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.use_mask_token()

    @staticmethod
    def add_args(parser):
        add_bert_adapter_args(parser, decoder_side=True)
        parser.add_argument("--length-loss-factor", type=float,
                            help="weight of the length loss added to the word loss (Sec. 3.3)")
        parser.add_argument("--attention-dropout", type=float, metavar="P")

    @property
    def allow_length_beam(self):
        return True

    @classmethod
    def build_model(cls, args, task):
        abnet_base(args)
        source_bert = require_bert(args, "source-bert")
        target_bert = require_bert(args, "target-bert")
        check_vocabulary(task.source_dictionary, source_bert, "--source-bert", "source")
        check_vocabulary(task.target_dictionary, target_bert, "--target-bert", "target")
        x_bert = load_bert_model(source_bert, "--source-bert")
        masked_lm, fresh_head = load_masked_lm(target_bert, "--target-bert")
        encoder = AbnetEncoder(args, task.source_dictionary, x_bert, with_length_token=True)
        decoder = AbnetDecoder(args, task.target_dictionary, masked_lm, x_bert.config.hidden_size)
        model = cls(args, encoder, decoder)
        freeze_berts(model, args.finetune_bert)
        if fresh_head:
            logger.warning("%s has no MLM head weights (%s): training them", target_bert,
                           ", ".join(fresh_head))
            for name, param in decoder.mlm_head.named_parameters():
                if f"cls.{name}" in fresh_head:
                    param.requires_grad_(True)
        log_parameter_counts(model, "AB-Net" + (" FB" if args.finetune_bert else ""))
        return model

    def initialize_output_tokens(self, encoder_out, src_tokens):
        length_lprobs = self.decoder.forward_length(normalize=True, encoder_out=encoder_out)
        tokens = masked_canvas(length_lprobs.argmax(-1), self.bos, self.eos, self.pad, self.unk)
        return MaskPredictOut(
            output_tokens=tokens,
            output_scores=tokens.new_zeros(tokens.size()).type_as(length_lprobs),
            attn=None, step=0, max_step=0, history=None, length_lprobs=length_lprobs,
        )

    def regenerate_length_beam(self, decoder_out, beam_size):
        """Sec. 4.1: "taking the top B length predictions into consideration" (fairseq's CMLM
        uses a window around the best length instead)."""
        top_lengths = decoder_out.length_lprobs.topk(beam_size, dim=-1).indices  # B x beam
        tokens = masked_canvas(top_lengths.reshape(-1), self.bos, self.eos, self.pad, self.unk)
        return decoder_out._replace(
            output_tokens=tokens,
            output_scores=tokens.new_zeros(tokens.size()).type_as(decoder_out.output_scores),
            length_lprobs=None,
        )


@register_model_architecture("abnet", "abnet")
def abnet_base(args):
    """WMT setting (Sec. 4.1): d_Aenc = 2048; adapters everywhere; authors' length table 1024."""
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 2048)
    args.encoder_adapter_top_k = getattr(args, "encoder_adapter_top_k", 0)
    args.decoder_adapter_top_k = getattr(args, "decoder_adapter_top_k", 0)
    args.decoder_adapter_heads = getattr(args, "decoder_adapter_heads", 12)
    args.adapter_dropout = getattr(args, "adapter_dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.0)
    args.max_length_classes = getattr(args, "max_length_classes", 1024)
    # Authors' criterion: length loss weight 0.1 (hard-coded in their code).
    args.length_loss_factor = getattr(args, "length_loss_factor", 0.1)
    args.finetune_bert = getattr(args, "finetune_bert", False)
    args.source_bert = getattr(args, "source_bert", None)
    args.target_bert = getattr(args, "target_bert", None)


@register_model_architecture("abnet", "abnet_iwslt")
def abnet_iwslt(args):
    """IWSLT14 setting (Sec. 4.1; authors' README ``_deep_small``): d_Aenc = 512, 4 heads."""
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 512)
    args.decoder_adapter_heads = getattr(args, "decoder_adapter_heads", 4)
    abnet_base(args)


@register_model_architecture("abnet", "abnet_tiny")
def abnet_tiny(args):
    """CPU/test size: small adapters and length table; the BERTs set the rest."""
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 64)
    args.decoder_adapter_heads = getattr(args, "decoder_adapter_heads", 2)
    args.max_length_classes = getattr(args, "max_length_classes", 256)
    abnet_base(args)


# ----------------------------------------------------------------------------------------------
# AB-Net-Enc: X-BERT with adapters + fairseq's autoregressive Transformer decoder (Table 3a)
# ----------------------------------------------------------------------------------------------
@register_model("abnet_enc")
class AbnetEncModel(TransformerModel):
    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        add_bert_adapter_args(parser, decoder_side=False)

    @classmethod
    def build_model(cls, args, task):
        abnet_enc_base(args)
        encoder, embed_tokens = build_bert_encoder_and_target_embedding(cls, args, task)
        decoder = TransformerDecoder(args, task.target_dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        freeze_berts(model, args.finetune_bert)
        log_parameter_counts(model, "AB-Net-Enc" + (" FB" if args.finetune_bert else ""))
        return model


def build_bert_encoder_and_target_embedding(model_class, args, task):
    """AB-Net-Enc's shared half: X-BERT with adapters, and the decoder's token embeddings."""
    source_bert = require_bert(args, "source-bert")
    check_vocabulary(task.source_dictionary, source_bert, "--source-bert", "source")
    x_bert = load_bert_model(source_bert, "--source-bert")
    args.encoder_embed_dim = x_bert.config.hidden_size  # the decoder attends over BERT states
    encoder = AbnetEncoder(args, task.source_dictionary, x_bert, with_length_token=False)
    embed_tokens = model_class.build_embedding(args, task.target_dictionary,
                                               args.decoder_embed_dim, args.decoder_embed_path)
    return encoder, embed_tokens


def _tiny_decoder_defaults(args):
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 64)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 64)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 128)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 2)


def _bert_encoder_defaults(args):
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 2048)
    args.encoder_adapter_top_k = getattr(args, "encoder_adapter_top_k", 0)
    args.adapter_dropout = getattr(args, "adapter_dropout", 0.1)
    args.finetune_bert = getattr(args, "finetune_bert", False)
    args.source_bert = getattr(args, "source_bert", None)
    args.share_all_embeddings = False  # the source side has BERT's embeddings, not fairseq's


@register_model_architecture("abnet_enc", "abnet_enc")
def abnet_enc_base(args):
    """Transformer-base decoder (Table 3a uses bert-large-cased on the source side)."""
    _bert_encoder_defaults(args)
    base_architecture(args)


@register_model_architecture("abnet_enc", "abnet_enc_tiny")
def abnet_enc_tiny(args):
    _tiny_decoder_defaults(args)
    abnet_enc_base(args)


# ----------------------------------------------------------------------------------------------
# AB-Net-Enc with a Mask-Predict Transformer decoder (fairseq's NAT decoder)
# ----------------------------------------------------------------------------------------------
@register_model("abnet_enc_cmlm")
class AbnetEncCmlmModel(MaskPredictWithMaskToken, CMLMNATransformerModel):
    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.use_mask_token()

    @staticmethod
    def add_args(parser):
        CMLMNATransformerModel.add_args(parser)
        add_bert_adapter_args(parser, decoder_side=False)

    @classmethod
    def build_model(cls, args, task):
        abnet_enc_cmlm_base(args)
        encoder, embed_tokens = build_bert_encoder_and_target_embedding(cls, args, task)
        decoder = NATransformerDecoder(args, task.target_dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        freeze_berts(model, args.finetune_bert)
        log_parameter_counts(model, "AB-Net-Enc (Mask-Predict)" + (" FB" if args.finetune_bert else ""))
        return model


@register_model_architecture("abnet_enc_cmlm", "abnet_enc_cmlm")
def abnet_enc_cmlm_base(args):
    _bert_encoder_defaults(args)
    cmlm_base_architecture(args)
    args.share_all_embeddings = False


@register_model_architecture("abnet_enc_cmlm", "abnet_enc_cmlm_tiny")
def abnet_enc_cmlm_tiny(args):
    _tiny_decoder_defaults(args)
    abnet_enc_cmlm_base(args)
