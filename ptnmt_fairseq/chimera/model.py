"""Chimera: "Learning Shared Semantic Space for Speech-to-Text Translation" (Han, Wang, Ji and
Li, Findings of ACL 2021; tutorial, part IV).

Speech and text are encoded into one fixed-size *shared semantic memory* that the decoder reads::

    speech -> wav2vec 2.0 -> CNN --------------.
                                               +-> shared Transformer encoder -> h (T x d)
    text   -> embeddings + positions ----------'
    M memory queries --attend over h, n layers--> memory (M x d) -> Transformer decoder

The memory has M slots whatever the input length, for speech and text alike, so MT data (text
through the same memory) trains the space that ST decodes from.

Where the paper is silent the authors' code decides (Glaciohound/Chimera-ST,
``fairseq/models/chimera/s2t_transformer_w2v2_interlingua.py`` and its training scripts):

- M = 64 memory slots (``--interlingua-length 64`` in the scripts; the architecture's own
  default, 16, is not what was run) and 3 memory layers; the layers are Transformer encoder
  layers over concat(h, memory) whose attention mask lets every row see h only, so the slots
  never attend to each other; the decoder attends to the M slots only.
- speech after the CNN is scaled by sqrt(d) and gets *no* position embedding (wav2vec 2.0's own
  convolutional position embedding already encodes order); text gets sinusoidal positions.
  With ``--speech-frontend fbank`` speech gets sinusoidal positions (fairseq's S2T Transformer),
  since filterbanks carry no position.
- d512, 6+6 layers, 8 heads, FFN 2048, pre-norm; dropout, attention dropout and activation
  dropout 0.1 (the scripts' ``--dropout``, ``--attention-dropout``, ``--activation-dropout``).

Departure: the authors' key padding mask over h is all zeros, so the memory attends to padded
frames and a sentence's memory depends on how its batch is padded. Here padded steps are masked
(tested: a sentence gives the same memory alone and padded in a batch). The authors' queries are
``Embedding(M, d, padding_idx=0).weight``, which starts slot 0 at zero; here every query starts
from N(0, d^-1/2), fairseq's embedding initialisation.
"""
import logging

import torch
import torch.nn as nn
from fairseq.models import FairseqEncoder, register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig, TransformerDecoderBase, TransformerEncoderBase, TransformerModel,
    base_architecture,
)
from fairseq.modules import LayerNorm
from fairseq.modules.transformer_layer import TransformerEncoderLayerBase

from ptnmt_fairseq.common.modeling import log_parameter_counts, padding_mask
from ptnmt_fairseq.common.speech.frontend import (
    AcousticFrontEndMixin, add_frontend_args, frontend_defaults, frontend_description,
    wav2vec2_unless_fbank,
)

logger = logging.getLogger(__name__)


class SharedSemanticMemory(nn.Module):
    """The shared semantic memory module (Chimera, Sec. 2; tutorial: "a set of memory queries
    attends over the contextual features through a shared semantic projection").

    ``num_slots`` learned queries go with the contextual features h through ``num_layers``
    fairseq Transformer encoder layers; every row attends to the real (unpadded) steps of h
    only, so the slots read h and never each other, and h itself is refined layer by layer as
    in the authors' code. Forward: h (T x B x d), padding (B x T, True = pad) ->
    memory (M x B x d), whatever T.
    """

    def __init__(self, cfg: TransformerConfig, num_slots: int, num_layers: int):
        super().__init__()
        dim = cfg.encoder.embed_dim
        self.queries = nn.Parameter(torch.empty(num_slots, dim).normal_(0.0, dim ** -0.5))
        self.layers = nn.ModuleList(TransformerEncoderLayerBase(cfg) for _ in range(num_layers))
        # pre-norm layers leave their output unnormalised; the decoder expects it normalised
        self.layer_norm = LayerNorm(dim) if cfg.encoder.normalize_before else None

    @property
    def num_slots(self):
        return self.queries.size(0)

    def forward(self, states, padding):
        length, batch, dim = states.shape
        slots = self.queries.to(states.dtype).unsqueeze(1).expand(-1, batch, -1)
        x = torch.cat([states, slots], dim=0)
        # 1 = may not attend (fairseq's layer turns it into -1e8): the slots' columns, for all rows
        attn_mask = x.new_zeros(length + self.num_slots, length + self.num_slots)
        attn_mask[:, length:] = 1.0
        key_padding = torch.cat([padding, padding.new_zeros(batch, self.num_slots)], dim=1)
        for layer in self.layers:
            x = layer(x, key_padding, attn_mask=attn_mask)
        memory = x[length:]
        return self.layer_norm(memory) if self.layer_norm is not None else memory


class ChimeraTransformerEncoder(TransformerEncoderBase):
    """fairseq's Transformer encoder; speech features (``token_embeddings``) get positions only
    when ``speech_positions`` (the filterbank front-end), as described in the module doc."""

    def __init__(self, cfg, dictionary, embed_tokens, speech_positions: bool):
        super().__init__(cfg, dictionary, embed_tokens)
        self.speech_positions = speech_positions

    def forward_embedding(self, src_tokens, token_embedding=None):
        if token_embedding is None or self.speech_positions:
            return super().forward_embedding(src_tokens, token_embedding)
        x = embed = self.embed_scale * token_embedding  # sqrt(d), as the authors' audio path
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return self.dropout_module(x), embed


class ChimeraEncoder(AcousticFrontEndMixin, FairseqEncoder):
    """Speech (float waveforms) or text (token ids) -> shared encoder -> the M-slot memory.

    Returns fairseq's encoder-output dict with ``encoder_out`` = [memory, M x B x d] and an
    all-False ``encoder_padding_mask`` (B x M), so fairseq's decoder attends to the memory only;
    ``contextual_out`` and ``contextual_padding_mask`` hold h (T x B x d) and its padding for
    inspection (``reorder_encoder_out``, used by beam search, keeps only what the decoder
    reads)."""

    def __init__(self, args, dictionary, transformer, memory, wav2vec2=None):
        super().__init__(dictionary)
        self.init_acoustic_frontend(args, wav2vec2)
        self.transformer = transformer
        self.memory = memory
        self.padding_idx = dictionary.pad()
        self.stand_in_idx = dictionary.unk()

    def contextual_features(self, src_tokens, src_lengths):
        """h (T x B x d) and its padding mask (B x T) for text ids or waveforms."""
        if not src_tokens.is_floating_point():
            out = self.transformer(src_tokens, src_lengths)
        else:
            speech, lengths = self.acoustic_features(src_tokens, src_lengths)
            # fairseq's encoder derives its padding mask (and positions) from token ids; these
            # stand-ins give both, while the embeddings themselves are the speech features.
            stand_in = torch.full(speech.shape[:2], self.stand_in_idx, device=speech.device)
            stand_in.masked_fill_(padding_mask(lengths, speech.size(1)), self.padding_idx)
            out = self.transformer(stand_in, lengths, token_embeddings=speech)
        return out["encoder_out"][0], out["encoder_padding_mask"][0]

    def forward(self, src_tokens, src_lengths, return_all_hiddens=False, **kwargs):
        states, padding = self.contextual_features(src_tokens, src_lengths)
        memory = self.memory(states, padding)
        return {
            "encoder_out": [memory],
            "encoder_padding_mask": [padding.new_zeros(memory.size(1), memory.size(0))],
            "encoder_embedding": [], "encoder_states": [], "src_tokens": [], "src_lengths": [],
            "contextual_out": [states], "contextual_padding_mask": [padding],
        }

    def reorder_encoder_out(self, encoder_out, new_order):
        return self.transformer.reorder_encoder_out(encoder_out, new_order)

    def max_positions(self):
        return None  # audio lengths are limited by the task (--max-audio-samples)


@register_model("chimera")
class ChimeraModel(TransformerModel):
    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_frontend_args(parser)
        parser.add_argument("--memory-slots", type=int, metavar="M",
                            help="size M of the shared semantic memory (the authors' "
                                 "--interlingua-length; 64 in their scripts)")
        parser.add_argument("--memory-layers", type=int, metavar="N",
                            help="layers of the memory module (--interlingua-layers, 3)")

    @classmethod
    def build_model(cls, args, task):
        chimera_base(args)
        if args.memory_slots < 1 or args.memory_layers < 1:
            raise ValueError(f"--memory-slots {args.memory_slots} and --memory-layers "
                             f"{args.memory_layers} must be at least 1")
        dictionary = task.target_dictionary  # one dictionary for source and target text
        wav2vec2 = wav2vec2_unless_fbank(args, "Chimera")
        cfg = TransformerConfig.from_namespace(args)
        embed_tokens = cls.build_embedding(args, dictionary, args.encoder_embed_dim)
        transformer = ChimeraTransformerEncoder(cfg, dictionary, embed_tokens,
                                                speech_positions=wav2vec2 is None)
        memory = SharedSemanticMemory(cfg, args.memory_slots, args.memory_layers)
        encoder = ChimeraEncoder(args, dictionary, transformer, memory, wav2vec2)
        decoder = TransformerDecoderBase(cfg, dictionary, embed_tokens)
        model = cls(args, encoder, decoder)
        log_parameter_counts(model, "Chimera", f"{frontend_description(args)}, memory "
                                               f"{args.memory_slots} slots x {args.memory_layers} layers")
        return model

    def max_positions(self):
        return (None, self.decoder.max_positions())


@register_model_architecture("chimera", "chimera")
def chimera_base(args):
    """As the authors ran it: d512, 6+6 layers, 8 heads, FFN 2048, pre-norm, 64 slots, 3 layers."""
    args.memory_slots = getattr(args, "memory_slots", 64)
    args.memory_layers = getattr(args, "memory_layers", 3)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    args.dropout = getattr(args, "dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    args.activation_dropout = getattr(args, "activation_dropout", 0.1)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    frontend_defaults(args)
    args.max_source_positions = getattr(args, "max_source_positions", 1024)
    args.max_target_positions = getattr(args, "max_target_positions", 1024)
    base_architecture(args)  # fairseq's transformer fills in everything else


@register_model_architecture("chimera", "chimera_tiny")
def chimera_tiny(args):
    """CPU-sized: 2+2 layers, d128, 64 slots over 2 memory layers; recipe, tests, benchmark."""
    args.memory_layers = getattr(args, "memory_layers", 2)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 128)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 256)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.encoder_layers = getattr(args, "encoder_layers", 2)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.shrink_channels = getattr(args, "shrink_channels", 128)
    args.conv_channels = getattr(args, "conv_channels", 256)
    chimera_base(args)
