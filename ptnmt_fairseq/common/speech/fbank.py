"""The standard fairseq speech-to-text front-end: log-mel filterbanks into a convolutional
subsampler, as an alternative to wav2vec 2.0 for the speech methods (XSTNet, Chimera).

Features are 80-dimensional log-mel filterbanks, 25 ms windows every 10 ms (torchaudio's
Kaldi-compatible ``fbank`` on the waveform in 16-bit range, as fairseq's ``get_fbank`` and
``examples/speech_to_text/prep_*_data.py`` compute them), with utterance-level CMVN (fairseq's
``utterance_cmvn`` feature transform). fairseq's ``Conv1dSubsampler`` (two stride-2 convolutions
with GLU, S2T Transformer, Wang et al., 2020) then shrinks them 4x, 10 ms frames into 40 ms steps.

Features are computed in the model from the waveforms the speech datasets already yield, each
utterance over its own samples only, so wav2vec 2.0 and filterbank models read the same data, and
a sentence's features never depend on its batch's padding (the subsampler zeroes padded steps
between its convolutions for the same reason).
"""
import torch
import torch.nn as nn
from fairseq.data.audio.feature_transforms.utterance_cmvn import UtteranceCMVN
from fairseq.models.speech_to_text.modules.convolution import Conv1dSubsampler

from ptnmt_fairseq.common.modeling import padding_mask

SAMPLE_RATE = 16000  # the speech datasets resample every file to 16 kHz
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0
INT16_SCALE = 2 ** 15  # Kaldi's fbank expects 16-bit sample values, not [-1, 1] floats


def log_mel_filterbank(waveform, num_mel_bins: int = 80):
    """One utterance: ``waveform`` (samples,) floats in [-1, 1] at 16 kHz -> frames x num_mel_bins
    log-mel energies with utterance CMVN (zero mean, unit variance per bin).

    ValueError when the utterance is shorter than one 25 ms window (400 samples)."""
    import torchaudio.compliance.kaldi as kaldi

    if waveform.numel() < int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000):
        raise ValueError(f"a speech input of {waveform.numel()} samples is shorter than one "
                         f"{FRAME_LENGTH_MS:g} ms filterbank window at {SAMPLE_RATE} Hz")
    features = kaldi.fbank(waveform.float().unsqueeze(0) * INT16_SCALE,
                           num_mel_bins=num_mel_bins, frame_length=FRAME_LENGTH_MS,
                           frame_shift=FRAME_SHIFT_MS, dither=0.0,
                           sample_frequency=SAMPLE_RATE)
    normalised = UtteranceCMVN()(features.double().cpu().numpy())
    return torch.from_numpy(normalised).to(waveform.device, torch.float32)


def batch_filterbanks(waveform, lengths, num_mel_bins: int = 80):
    """B x samples padded waveforms (``lengths``: B samples) -> (B x frames x num_mel_bins, with
    zeros past each utterance's frames; frame counts: B)."""
    features = [log_mel_filterbank(w[:n], num_mel_bins) for w, n in zip(waveform, lengths.tolist())]
    frames = lengths.new_tensor([f.size(0) for f in features])
    return nn.utils.rnn.pad_sequence(features, batch_first=True), frames


class MaskedConv1dSubsampler(Conv1dSubsampler):
    """fairseq's ``Conv1dSubsampler`` (stride-2 Conv1d + GLU per layer, output lengths
    floor((L - 1) / 2) + 1 per layer) with padded steps zeroed before each convolution, so that
    a sentence's output is the same alone or padded in a batch; returns batch-first."""

    def forward(self, features, lengths):
        """features: B x T x C, lengths: B -> (B x T' x out_channels, lengths')."""
        x = features.transpose(1, 2)
        for conv in self.conv_layers:
            x = x.masked_fill(padding_mask(lengths, x.size(2)).unsqueeze(1), 0.0)
            x = nn.functional.glu(conv(x), dim=1)
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return x.transpose(1, 2), lengths


class FilterbankFrontEnd(nn.Module):
    """Waveforms -> log-mel filterbanks with utterance CMVN -> convolutional subsampler.

    ``out_dim``: the Transformer's width; ``conv_channels``: fairseq S2T's ``--conv-channels``
    (1024 in ``s2t_transformer_s``); ``kernel_sizes``: one stride-2 layer each (fairseq: 5,5).
    Forward: B x samples floats, lengths B -> (B x steps x out_dim, steps B), 40 ms steps with
    two layers."""

    def __init__(self, out_dim: int, num_mel_bins: int = 80, conv_channels: int = 1024,
                 kernel_sizes=(5, 5)):
        super().__init__()
        self.num_mel_bins = num_mel_bins
        self.subsampler = MaskedConv1dSubsampler(num_mel_bins, conv_channels, out_dim,
                                                 list(kernel_sizes))

    def forward(self, waveform, lengths):
        with torch.no_grad():  # a fixed transform of the input: nothing to learn in it
            features, frames = batch_filterbanks(waveform, lengths, self.num_mel_bins)
        # computed in float32 (Kaldi's fbank), fed in the model's dtype (e.g. --bf16)
        dtype = self.subsampler.conv_layers[0].weight.dtype
        return self.subsampler(features.to(dtype), frames)
