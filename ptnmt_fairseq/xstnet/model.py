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
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig, TransformerDecoderBase, TransformerEncoderBase, TransformerModel,
    base_architecture,
)

from ptnmt_fairseq.common.language_tokens import AUDIO_TAG, tag_index
from ptnmt_fairseq.common.modeling import log_parameter_counts, padding_mask
from ptnmt_fairseq.common.speech.fbank import FilterbankFrontEnd
from ptnmt_fairseq.common.speech.wav2vec2 import wav2vec2_frames, wav2vec2_from_args

logger = logging.getLogger(__name__)


class Shrinker(nn.Module):
    """Two stride-2 1-D convolutions over wav2vec 2.0 frames (XSTNet: "two convolution layers
    with 2-stride to shrink the length"); 20 ms frames become 80 ms steps.

    Padded frames are zeroed before each convolution, so a sentence's output does not depend on
    how much padding its batch has. Output length per layer: floor((L - 1) / 2) + 1.
    """

    def __init__(self, in_dim, channels, out_dim, kernel_sizes=(5, 5)):
        super().__init__()
        dims = [in_dim] + [channels] * (len(kernel_sizes) - 1) + [out_dim]
        self.convs = nn.ModuleList(
            nn.Conv1d(dims[i], dims[i + 1], k, stride=2, padding=k // 2)
            for i, k in enumerate(kernel_sizes)
        )

    @staticmethod
    def output_lengths(lengths, num_layers):
        for _ in range(num_layers):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x, lengths):
        """x: B x T x C frames, lengths: B -> (B x T' x out_dim, lengths')."""
        x = x.transpose(1, 2)
        for conv in self.convs:
            x = x.masked_fill(padding_mask(lengths, x.size(2)).unsqueeze(1), 0.0)
            x = F.gelu(conv(x))
            lengths = self.output_lengths(lengths, 1)
        return x.transpose(1, 2), lengths


def kernel_sizes(text):
    return [int(k) for k in str(text).split(",")]


class XSTNetEncoder(FairseqEncoder):
    """Speech (float waveforms) or text (token ids) into the shared Transformer encoder.

    The acoustic front-end is wav2vec 2.0 plus the shrinker (the paper's), or, with
    ``--speech-frontend fbank``, log-mel filterbanks into fairseq's convolutional subsampler
    (``common/speech/fbank.py``), which learns from scratch on a CPU budget."""

    def __init__(self, args, dictionary, transformer: TransformerEncoderBase, wav2vec2=None):
        super().__init__(dictionary)
        self.wav2vec2 = wav2vec2
        self.freeze_w2v = args.freeze_w2v and wav2vec2 is not None
        if wav2vec2 is None:
            self.fbank = FilterbankFrontEnd(args.encoder_embed_dim, args.fbank_dim,
                                            args.conv_channels, kernel_sizes(args.conv_kernel_sizes))
        else:
            if self.freeze_w2v:
                self.wav2vec2.requires_grad_(False)
            self.shrinker = Shrinker(wav2vec2.cfg.encoder_embed_dim, args.shrink_channels,
                                     args.encoder_embed_dim, kernel_sizes(args.shrink_kernel_sizes))
        self.transformer = transformer
        self.audio_tag = tag_index(dictionary, AUDIO_TAG, "the XSTNet encoder")
        self.padding_idx = dictionary.pad()

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_w2v:  # a frozen wav2vec 2.0 also keeps its dropout off
            self.wav2vec2.eval()
        return self

    def acoustic_features(self, waveform, lengths):
        """wav2vec 2.0 then the shrinker (80 ms steps), or filterbanks then the subsampler
        (40 ms steps): B x samples -> (B x steps x d, steps)."""
        if self.wav2vec2 is None:
            return self.fbank(waveform, lengths)
        frames, frame_lengths = wav2vec2_frames(self.wav2vec2, waveform, lengths, self.freeze_w2v)
        return self.shrinker(frames, frame_lengths)

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
        parser.add_argument("--w2v-path", type=str, metavar="PATH",
                            help="fairseq wav2vec 2.0 checkpoint (self-supervised or CTC)")
        parser.add_argument("--freeze-w2v", action="store_true",
                            help="freeze wav2vec 2.0 (default: fine-tune it, as the authors)")
        parser.add_argument("--shrink-kernel-sizes", type=str, metavar="K,K",
                            help="kernel sizes of the stride-2 convolutions, one per layer")
        parser.add_argument("--shrink-channels", type=int, metavar="N",
                            help="channels between the shrinking convolutions")
        parser.add_argument("--speech-frontend", choices=["wav2vec2", "fbank"],
                            help="wav2vec 2.0 + shrinker (default, the paper's), or 80-dim "
                                 "log-mel filterbanks with utterance CMVN + fairseq's "
                                 "Conv1dSubsampler (no --w2v-path needed)")
        parser.add_argument("--fbank-dim", type=int, metavar="N",
                            help="log-mel bins of the fbank front-end (80)")
        parser.add_argument("--conv-channels", type=int, metavar="N",
                            help="channels of the fbank front-end's subsampler (1024, fairseq S2T)")
        parser.add_argument("--conv-kernel-sizes", type=str, metavar="K,K",
                            help="kernel sizes of the subsampler's stride-2 layers (5,5)")

    @classmethod
    def build_model(cls, args, task):
        xstnet_base(args)
        dictionary = task.target_dictionary  # one dictionary for source and target text
        wav2vec2 = None if args.speech_frontend == "fbank" else wav2vec2_from_args(args, "XSTNet")
        cfg = TransformerConfig.from_namespace(args)
        embed_tokens = cls.build_embedding(args, dictionary, args.encoder_embed_dim)
        encoder = XSTNetEncoder(args, dictionary,
                                TransformerEncoderBase(cfg, dictionary, embed_tokens), wav2vec2)
        decoder = TransformerDecoderBase(cfg, dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        frontend = "filterbanks" if wav2vec2 is None else \
            f"wav2vec 2.0 {'frozen' if args.freeze_w2v else 'fine-tuned'}"
        log_parameter_counts(model, "XSTNet", frontend)
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
    args.freeze_w2v = getattr(args, "freeze_w2v", False)
    args.shrink_kernel_sizes = getattr(args, "shrink_kernel_sizes", "5,5")
    args.shrink_channels = getattr(args, "shrink_channels", 512)
    args.speech_frontend = getattr(args, "speech_frontend", None) or "wav2vec2"
    args.fbank_dim = getattr(args, "fbank_dim", 80)
    args.conv_channels = getattr(args, "conv_channels", 1024)
    args.conv_kernel_sizes = getattr(args, "conv_kernel_sizes", "5,5")
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
