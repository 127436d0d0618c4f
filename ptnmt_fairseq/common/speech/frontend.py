"""The acoustic front-end shared by the speech methods (XSTNet, Chimera): raw 16 kHz waveforms
into B x steps x d features for a Transformer encoder.

Two front-ends, chosen with ``--speech-frontend``:

- ``wav2vec2`` (the papers'): fairseq's ``Wav2Vec2Model`` from ``--w2v-path``
  (``common/speech/wav2vec2.py``), fine-tuned unless ``--freeze-w2v``, then the shrinker, two
  stride-2 1-D convolutions with GELU (XSTNet: "two convolution layers with 2-stride to shrink the
  length"; Chimera: "Wav2Vec2 module -> CNN"): 20 ms frames become 80 ms steps.
- ``fbank``: 80-dim log-mel filterbanks into fairseq's convolutional subsampler
  (``common/speech/fbank.py``), 40 ms steps, learnt from scratch on a CPU budget.

Both zero padded steps between convolutions, so a sentence's features do not depend on its
batch's padding. The modules are attributes of the encoder (``wav2vec2``, ``shrinker``,
``fbank``), so checkpoints keep the state-dict keys ``encoder.wav2vec2.*``, ``encoder.shrinker.*``
and ``encoder.fbank.*``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ptnmt_fairseq.common.modeling import padding_mask
from ptnmt_fairseq.common.speech.fbank import FilterbankFrontEnd
from ptnmt_fairseq.common.speech.wav2vec2 import wav2vec2_frames, wav2vec2_from_args


class Shrinker(nn.Module):
    """Two stride-2 1-D convolutions over wav2vec 2.0 frames; 20 ms frames become 80 ms steps.

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


def add_frontend_args(parser):
    """The front-end's model options (defaults: ``frontend_defaults``)."""
    parser.add_argument("--w2v-path", type=str, metavar="PATH",
                        help="fairseq wav2vec 2.0 checkpoint (self-supervised or CTC)")
    parser.add_argument("--freeze-w2v", action="store_true",
                        help="freeze wav2vec 2.0 (default: fine-tune it, as the authors)")
    parser.add_argument("--shrink-kernel-sizes", type=str, metavar="K,K",
                        help="kernel sizes of the stride-2 convolutions, one per layer")
    parser.add_argument("--shrink-channels", type=int, metavar="N",
                        help="channels between the shrinking convolutions")
    parser.add_argument("--speech-frontend", choices=["wav2vec2", "fbank"],
                        help="wav2vec 2.0 + shrinker (default, the paper's), or 80-dim log-mel "
                             "filterbanks with utterance CMVN + fairseq's Conv1dSubsampler "
                             "(no --w2v-path needed)")
    parser.add_argument("--fbank-dim", type=int, metavar="N",
                        help="log-mel bins of the fbank front-end (80)")
    parser.add_argument("--conv-channels", type=int, metavar="N",
                        help="channels of the fbank front-end's subsampler (1024, fairseq S2T)")
    parser.add_argument("--conv-kernel-sizes", type=str, metavar="K,K",
                        help="kernel sizes of the subsampler's stride-2 layers (5,5)")


def frontend_defaults(args):
    """Architecture defaults of the front-end options (XSTNet's NeurST config and ConST)."""
    args.freeze_w2v = getattr(args, "freeze_w2v", False)
    args.shrink_kernel_sizes = getattr(args, "shrink_kernel_sizes", "5,5")
    args.shrink_channels = getattr(args, "shrink_channels", 512)
    args.speech_frontend = getattr(args, "speech_frontend", None) or "wav2vec2"
    args.fbank_dim = getattr(args, "fbank_dim", 80)
    args.conv_channels = getattr(args, "conv_channels", 1024)
    args.conv_kernel_sizes = getattr(args, "conv_kernel_sizes", "5,5")


def wav2vec2_unless_fbank(args, method: str):
    """The wav2vec 2.0 of ``--w2v-path`` (or of the checkpoint's config), None for fbank."""
    return None if args.speech_frontend == "fbank" else wav2vec2_from_args(args, method)


def frontend_description(args) -> str:
    if args.speech_frontend == "fbank":
        return "filterbanks"
    return f"wav2vec 2.0 {'frozen' if args.freeze_w2v else 'fine-tuned'}"


class AcousticFrontEndMixin:
    """For a ``FairseqEncoder`` that reads speech: builds the front-end's modules on the encoder
    (``init_acoustic_frontend``) and runs them (``acoustic_features``)."""

    def init_acoustic_frontend(self, args, wav2vec2=None):
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

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_w2v:  # a frozen wav2vec 2.0 also keeps its dropout off
            self.wav2vec2.eval()
        return self

    def acoustic_features(self, waveform, lengths):
        """wav2vec 2.0 then the shrinker (80 ms steps), or filterbanks then the subsampler
        (40 ms steps): B x samples floats in [-1, 1], lengths B -> (B x steps x d, steps B)."""
        if self.wav2vec2 is None:
            return self.fbank(waveform, lengths)
        frames, frame_lengths = wav2vec2_frames(self.wav2vec2, waveform, lengths, self.freeze_w2v)
        return self.shrinker(frames, frame_lengths)
