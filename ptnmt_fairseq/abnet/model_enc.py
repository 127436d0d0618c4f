"""AB-Net-Enc (Guo et al., NeurIPS 2020, Table 3a): X-BERT with adapters as the encoder, a fairseq
decoder trained from scratch.

* ``abnet_enc``       fairseq's autoregressive Transformer decoder, beam search.
* ``abnet_enc_cmlm``  fairseq's Mask-Predict (CMLM) Transformer decoder, decoded with [MASK].

Both are built by ``AbnetEncBuild``; they differ only in the fairseq model they extend and its
decoder class.
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.nat import NATransformerDecoder
from fairseq.models.nat.cmlm_transformer import CMLMNATransformerModel, cmlm_base_architecture
from fairseq.models.transformer import TransformerDecoder, TransformerModel, base_architecture

from ptnmt_fairseq.abnet.encoder import (
    add_bert_adapter_args, bert_adapter_encoder_defaults, build_source_encoder, freeze_berts,
)
from ptnmt_fairseq.abnet.mask_predict import MaskPredictWithMaskToken
from ptnmt_fairseq.common.modeling import log_parameter_counts


class AbnetEncBuild:
    """AB-Net-Enc's one build, mixed in before the fairseq model it extends: that model's options
    plus X-BERT's, X-BERT with adapters (no [LENGTH] token) and ``decoder_class`` over it."""

    display_name = "AB-Net-Enc"
    decoder_class = None

    @classmethod
    def add_args(cls, parser):
        super(AbnetEncBuild, cls).add_args(parser)
        add_bert_adapter_args(parser, decoder_side=False)

    @classmethod
    def build_model(cls, args, task):
        cls.arch_defaults(args)
        encoder = build_source_encoder(args, task.source_dictionary, with_length_token=False)
        args.encoder_embed_dim = encoder.embed_dim  # the decoder attends over BERT states
        embed_tokens = cls.build_embedding(args, task.target_dictionary, args.decoder_embed_dim,
                                           args.decoder_embed_path)
        decoder = cls.decoder_class(args, task.target_dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        freeze_berts(model, args.finetune_bert)
        log_parameter_counts(model, cls.display_name + (" FB" if args.finetune_bert else ""))
        return model


@register_model("abnet_enc")
class AbnetEncModel(AbnetEncBuild, TransformerModel):
    decoder_class = TransformerDecoder

    @staticmethod
    def arch_defaults(args):
        abnet_enc_base(args)


@register_model("abnet_enc_cmlm")
class AbnetEncCmlmModel(AbnetEncBuild, MaskPredictWithMaskToken, CMLMNATransformerModel):
    display_name = "AB-Net-Enc (Mask-Predict)"
    decoder_class = NATransformerDecoder

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.use_mask_token()

    @staticmethod
    def arch_defaults(args):
        abnet_enc_cmlm_base(args)


def _bert_encoder_defaults(args):
    bert_adapter_encoder_defaults(args)
    args.share_all_embeddings = False  # the source side has BERT's embeddings, not fairseq's


def _tiny_decoder_defaults(args):
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 64)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 64)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 128)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 2)


@register_model_architecture("abnet_enc", "abnet_enc")
def abnet_enc_base(args):
    """Transformer-base decoder (Table 3a uses bert-large-cased on the source side)."""
    _bert_encoder_defaults(args)
    base_architecture(args)


@register_model_architecture("abnet_enc", "abnet_enc_tiny")
def abnet_enc_tiny(args):
    _tiny_decoder_defaults(args)
    abnet_enc_base(args)


@register_model_architecture("abnet_enc_cmlm", "abnet_enc_cmlm")
def abnet_enc_cmlm_base(args):
    """fairseq's ``cmlm_transformer`` decoder (Transformer-base size)."""
    _bert_encoder_defaults(args)
    cmlm_base_architecture(args)


@register_model_architecture("abnet_enc_cmlm", "abnet_enc_cmlm_tiny")
def abnet_enc_cmlm_tiny(args):
    _tiny_decoder_defaults(args)
    abnet_enc_cmlm_base(args)
