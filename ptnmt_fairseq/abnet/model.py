"""AB-Net: frozen source and target BERTs joined by adapters, decoded with Mask-Predict.

Guo, Zhang, Xu, Wei, Chen, Chen. "Incorporating BERT into Parallel Sequence Decoding with
Adapters." NeurIPS 2020. Registered models:

* ``abnet``           X-BERT + encoder adapters (Eq. 4, 5) -> Y-BERT + cross-attention adapters
                      (Eq. 6); [LENGTH] token; trained as a conditional MLM (Eq. 3) and decoded
                      with Mask-Predict by fairseq's iterative refinement generator.
* ``abnet_enc``       AB-Net-Enc: X-BERT + encoder adapters -> fairseq Transformer decoder,
                      autoregressive, beam search (Table 3a); ``abnet/model_enc.py``.
* ``abnet_enc_cmlm``  AB-Net-Enc with fairseq's Mask-Predict (CMLM) Transformer decoder.

``--finetune-bert`` is AB-Net FB: the BERTs are trained too. The vanilla Mask-Predict baseline is
fairseq's own ``cmlm_transformer``.

The models subclass fairseq's NAT family, which is configured through ``add_args`` and
architecture presets; we follow it so every ``--iter-decode-*`` option keeps working.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqDecoder, register_model, register_model_architecture
from fairseq.models.nat.cmlm_transformer import CMLMNATransformerModel
from transformers import BertForMaskedLM

from ptnmt_fairseq.abnet.encoder import (
    add_bert_adapter_args, bert_adapter_encoder_defaults, build_source_encoder, freeze_berts,
)
from ptnmt_fairseq.abnet.mask_predict import MaskPredictWithMaskToken
from ptnmt_fairseq.abnet.modules import AdaptedBert, CrossAttentionAdapter, adapter_layer_ids
from ptnmt_fairseq.common.bert.pretrained import bert_option, check_bert_vocabulary, load_masked_lm
from ptnmt_fairseq.common.modeling import log_parameter_counts

logger = logging.getLogger(__name__)


class AbnetDecoder(FairseqDecoder):
    """Y-BERT, bidirectional, with a cross-attention adapter after each layer (Eq. 6); its own MLM
    head, tied to its word embeddings, projects onto the target vocabulary."""

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
        """Training (``normalize=False``): logits of the [MASK] slots only, N_masked x V, in
        row-major order of ``prev_output_tokens.eq(mask)``: the conditional-MLM loss (Eq. 3)
        covers those alone, so the vocabulary projection of the other slots was wasted work.
        Otherwise log-probs of every slot, B x T x V."""
        if not normalize:  # fairseq's nat_loss smooths over the full vocabulary
            return self.masked_logits(prev_output_tokens, encoder_out,
                                      prev_output_tokens.eq(self.dictionary.mask()))
        features = self.extract_features(prev_output_tokens, encoder_out)
        return F.log_softmax(self.mlm_head(features).index_fill(-1, self.unpredictable,
                                                                float("-inf")), -1)

    def masked_logits(self, prev_output_tokens, encoder_out, masks):
        """MLM-head logits at the ``masks`` positions only (N_masked x V): the head's vocabulary
        projection dominates decoding time, and unmasked slots do not need it."""
        return self.mlm_head(self.extract_features(prev_output_tokens, encoder_out)[masks])

    def masked_lprobs(self, prev_output_tokens, encoder_out, masks):
        """Decoding log-probs at the ``masks`` positions only (N_masked x V), never a token of
        ``unpredictable``."""
        logits = self.masked_logits(prev_output_tokens, encoder_out, masks)
        return F.log_softmax(logits.index_fill(-1, self.unpredictable, float("-inf")), -1)

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

    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs):
        """fairseq's CMLM forward; the decoder scored the [MASK] slots only (``AbnetDecoder
        .forward``), so the word-loss targets are those slots' tokens (N_masked) and every row
        counts."""
        out = super().forward(src_tokens, src_lengths, prev_output_tokens, tgt_tokens, **kwargs)
        word = out["word_ins"]
        word["tgt"] = word["tgt"][word["mask"]]
        word["mask"] = word["tgt"].new_ones(word["tgt"].shape, dtype=torch.bool)
        return out

    @property
    def allow_length_beam(self):
        return True

    @classmethod
    def build_model(cls, args, task):
        abnet_base(args)
        target_bert = bert_option(args, "--target-bert")
        check_bert_vocabulary(target_bert, "--target-bert", task.target_dictionary, "target")
        encoder = build_source_encoder(args, task.source_dictionary, with_length_token=True)
        masked_lm, fresh_head = load_masked_lm(target_bert, "--target-bert")
        decoder = AbnetDecoder(args, task.target_dictionary, masked_lm, encoder.embed_dim)
        model = cls(args, encoder, decoder)
        freeze_berts(model, args.finetune_bert)
        if args.max_length_classes - 1 > decoder.max_positions():
            logger.info("--max-length-classes %d: canvases longer than %d tokens, the positions of "
                        "--target-bert %s, are never proposed", args.max_length_classes,
                        decoder.max_positions(), target_bert)
        if fresh_head:
            logger.warning("%s has no MLM-head weights (%s): AB-Net trains them (a checkpoint "
                           "restores them)", target_bert, ", ".join(fresh_head))
            for name, param in decoder.mlm_head.named_parameters():
                if f"cls.{name}" in fresh_head:
                    param.requires_grad_(True)
        log_parameter_counts(model, "AB-Net" + (" FB" if args.finetune_bert else ""))
        return model


@register_model_architecture("abnet", "abnet")
def abnet_base(args):
    """WMT setting (Sec. 4.1): d_Aenc = 2048; adapters everywhere; authors' length table 1024."""
    bert_adapter_encoder_defaults(args)
    args.decoder_adapter_top_k = getattr(args, "decoder_adapter_top_k", 0)
    args.decoder_adapter_heads = getattr(args, "decoder_adapter_heads", 12)
    args.attention_dropout = getattr(args, "attention_dropout", 0.0)
    args.max_length_classes = getattr(args, "max_length_classes", 1024)
    # Authors' criterion: length loss weight 0.1 (hard-coded in their code).
    args.length_loss_factor = getattr(args, "length_loss_factor", 0.1)
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
