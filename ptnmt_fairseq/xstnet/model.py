"""XSTNet: "End-to-end Speech Translation via Cross-modal Progressive Training" (Ye, Wang and Li,
Interspeech 2021).

One Transformer translates speech and text. Speech goes through wav2vec 2.0 (the acoustic
encoder, fairseq's own ``Wav2Vec2Model`` from a fairseq checkpoint) and two stride-2
convolutions that shrink it towards text length; text goes through token embeddings with
positions. Both then share the Transformer encoder and decoder (fairseq's
``TransformerEncoderBase``/``TransformerDecoderBase``) and one embedding table, which is also the
output projection. Tags select the task (Table 1 of the tutorial's XSTNet slide)::

    MT   <en> This is a book.  ->  <fr> c'est un livre.
    ASR  <audio> [speech]      ->  <en> This is a book.
    ST   <audio> [speech]      ->  <fr> c'est un livre.

The source tag is the first encoder token (``<audio>``'s embedding is prepended to the shrunk
speech, as in the authors' NeurST code); the target tag is the decoder's first input token.

Where the paper is silent the authors' code decides (ReneeYe/ConST,
``models/speech_to_text/xstnet.py``, the author's fairseq port): wav2vec 2.0 is fine-tuned by
default (``--freeze-w2v`` to freeze), its input is the raw waveform without standardisation, the
shrinker is 2 x Conv1d(kernel 5, stride 2) with GELU and 512 channels, the Transformer is 6+6
layers, d=512, FFN 2048, 8 heads, pre-norm, dropout 0.1 (ConST's ``xstnet_base``).
"""
import logging

import torch
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig, TransformerDecoderBase, TransformerEncoderBase, TransformerModel,
    base_architecture,
)

from ptnmt_fairseq.common.language_tokens import AUDIO_TAG, tag_index
from ptnmt_fairseq.common.modeling import log_parameter_counts, padding_mask
from ptnmt_fairseq.common.speech.frontend import (
    AcousticFrontEndMixin, add_frontend_args, frontend_defaults, frontend_description,
    wav2vec2_unless_fbank,
)

logger = logging.getLogger(__name__)


class XSTNetEncoder(AcousticFrontEndMixin, FairseqEncoder):
    """Speech (float waveforms) or text (token ids) into the shared Transformer encoder.

    The acoustic front-end is wav2vec 2.0 plus the shrinker (the paper's), or, with
    ``--speech-frontend fbank``, log-mel filterbanks into fairseq's convolutional subsampler
    (``common/speech/frontend.py``). The ``<audio>`` tag's embedding is prepended to the speech
    features, which then get positions like text."""

    def __init__(self, args, dictionary, transformer: TransformerEncoderBase, wav2vec2=None):
        super().__init__(dictionary)
        self.init_acoustic_frontend(args, wav2vec2)
        self.transformer = transformer
        self.audio_tag = tag_index(dictionary, AUDIO_TAG, "the XSTNet encoder")
        self.padding_idx = dictionary.pad()

    def forward(self, src_tokens, src_lengths, return_all_hiddens=False, **kwargs):
        if not src_tokens.is_floating_point():
            return self.transformer(src_tokens, src_lengths, return_all_hiddens)
        speech, lengths = self.acoustic_features(src_tokens, src_lengths)
        tag = self.transformer.embed_tokens.weight[self.audio_tag]
        speech = torch.cat([tag.expand(speech.size(0), 1, -1), speech], dim=1)
        lengths = lengths + 1
        # fairseq's encoder derives its padding mask and positions from token ids; these
        # stand-ins give both, while the embeddings themselves are the speech features.
        stand_in = torch.full(speech.shape[:2], self.audio_tag, device=speech.device)
        stand_in.masked_fill_(padding_mask(lengths, speech.size(1)), self.padding_idx)
        return self.transformer(stand_in, lengths, return_all_hiddens, token_embeddings=speech)

    def reorder_encoder_out(self, encoder_out, new_order):
        return self.transformer.reorder_encoder_out(encoder_out, new_order)

    def max_positions(self):
        return None  # audio lengths are limited by the task (--max-audio-samples)


@register_model("xstnet")
class XSTNetModel(TransformerModel):
    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_frontend_args(parser)

    @classmethod
    def build_model(cls, args, task):
        xstnet_base(args)
        dictionary = task.target_dictionary  # one dictionary for source and target text
        wav2vec2 = wav2vec2_unless_fbank(args, "XSTNet")
        cfg = TransformerConfig.from_namespace(args)
        embed_tokens = cls.build_embedding(args, dictionary, args.encoder_embed_dim)
        encoder = XSTNetEncoder(args, dictionary,
                                TransformerEncoderBase(cfg, dictionary, embed_tokens), wav2vec2)
        decoder = TransformerDecoderBase(cfg, dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        log_parameter_counts(model, "XSTNet", frontend_description(args))
        return model

    def max_positions(self):
        return (None, self.decoder.max_positions())


@register_model_architecture("xstnet", "xstnet")
def xstnet_base(args):
    """ConST's ``xstnet_base`` (the author's fairseq port): 6+6 layers, d512, pre-norm."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    args.dropout = getattr(args, "dropout", 0.1)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    frontend_defaults(args)
    args.max_source_positions = getattr(args, "max_source_positions", 1024)
    args.max_target_positions = getattr(args, "max_target_positions", 1024)
    base_architecture(args)  # fairseq's transformer fills in everything else


@register_model_architecture("xstnet", "xstnet_tiny")
def xstnet_tiny(args):
    """CPU-sized: 2+2 layers, d128; for the offline recipe, tests and the benchmark."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 128)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 256)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.shrink_channels = getattr(args, "shrink_channels", 128)
    args.conv_channels = getattr(args, "conv_channels", 256)
    xstnet_base(args)
