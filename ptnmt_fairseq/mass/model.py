"""The MASS model: fairseq's Transformer with the paper's language embedding and a decoder that
can be fed the masked fragment alone at its original positions (Song et al., ICML 2019).

* Language embedding (Sec. 4.1: "we add a language embedding to each token of the input
  sentence for the encoder and decoder, which is also learnt end-to-end"): one learned vector per
  language token of the dictionary (``LANG_TOK_XX``), added to every position with the positional
  embedding. The encoder's language is its source's first token (the multilingual family puts the
  source language token there); the decoder's is its first input (the output-language token, as
  fine-tuning, fairseq-generate, fairseq-interactive and the hub interface feed it), or, in
  pre-training, the sentence's own language.
* Explicit decoder positions (Sec. 4.1: "keep the positional embedding of the unmasked tokens
  unchanged"): ``decoder_positions`` (B x K, 0-based, -1 for padding) in the net input replace
  fairseq's 0..K-1. Only MASS pre-training batches carry them; fine-tuning and generation run
  the plain decoder.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture
from fairseq.modules import LearnedPositionalEmbedding

from ptnmt_fairseq.common.language_tokens import tag_ids
from ptnmt_fairseq.mass.dataset import POSITION_PAD


class PositionsAndLanguage(nn.Module):
    """fairseq's positional embedding plus the language embedding of each sequence.

    ``forward(tokens, incremental_state=None)`` returns B x T x C, as the wrapped module does; the
    language of row b is that of its first non-pad token, a language tag (ValueError otherwise,
    naming the token). ``languages=None`` (--no-language-embeddings) adds no language term.
    ``explicit(positions, language)`` overrides the positions (and language) for one call."""

    def __init__(self, positions: nn.Module, languages, lang_of_token: torch.Tensor,
                 padding_idx: int, dictionary, role: str):
        super().__init__()
        self.positions, self.languages, self.padding_idx = positions, languages, padding_idx
        self.register_buffer("lang_of_token", lang_of_token, persistent=False)
        self.dictionary, self.role, self.override = dictionary, role, None

    @property
    def max_positions(self):
        return self.positions.max_positions

    @contextmanager
    def explicit(self, positions: torch.Tensor, language):
        """Use ``positions`` (B x T, 0-based, POSITION_PAD for padding) and ``language`` (B,)."""
        self.override = (positions, language)
        try:
            yield
        finally:
            self.override = None

    def language_of(self, tokens: torch.Tensor) -> torch.Tensor:
        first = tokens.gather(1, tokens.ne(self.padding_idx).long().argmax(1, keepdim=True))[:, 0]
        language = self.lang_of_token[first]
        if (language < 0).any():
            bad = self.dictionary[int(first[language < 0][0])]
            raise ValueError(f"the {self.role} must start with a language token (LANG_TOK_XX), "
                             f"got {bad!r}: use a multilingual-family task (--task mass)")
        return language

    def forward(self, tokens, incremental_state=None):
        if self.override is not None:
            positions, language = self.override
            embedded = self.lookup(positions)
        else:
            embedded = self.positions(tokens, incremental_state=incremental_state)
            language = self.language_of(tokens) if self.languages is not None else None
        if self.languages is None:
            return embedded
        return embedded + self.languages(language)[:, None, :].to(embedded.dtype)

    def lookup(self, positions):
        """Embeddings of 0-based ``positions`` in fairseq's numbering (padding_idx + 1 + p)."""
        index = torch.where(positions.eq(POSITION_PAD), torch.full_like(positions, self.padding_idx),
                            positions + self.padding_idx + 1)
        if isinstance(self.positions, LearnedPositionalEmbedding):
            return F.embedding(index, self.positions.weight, self.padding_idx)
        table = self.positions.weights  # sinusoidal: its precomputed table, extended if short
        if int(index.max()) >= table.size(0):
            table = self.positions.get_embedding(int(index.max()) + 1, self.positions.embedding_dim,
                                                 self.padding_idx)
        return table.to(index.device)[index]


@register_model("mass")
class MassModel(TransformerModel):
    """fairseq's Transformer with MASS's language embedding and explicit decoder positions; see
    the module docstring. ``forward`` takes ``decoder_positions`` (B x K) from MASS batches."""

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--no-language-embeddings", action="store_true",
                            help="leave out MASS's language embedding (the language tokens stay)")

    @classmethod
    def build_model(cls, args, task):
        mass_defaults(args)
        model = super().build_model(args, task)
        if model.encoder.embed_positions is None or model.decoder.embed_positions is None:
            raise ValueError("MASS needs positional embeddings: drop "
                             "--no-token-positional-embeddings")
        dictionary = task.target_dictionary
        tags = sorted(tag_ids(dictionary))
        lang_of_token = torch.full((len(dictionary),), -1, dtype=torch.long)
        lang_of_token[tags] = torch.arange(len(tags))
        languages = None
        if not args.no_language_embeddings:
            if not tags:
                raise ValueError(f"{getattr(dictionary, 'source', 'the dictionary')} has no "
                                 "language token (LANG_TOK_XX): MASS's language embedding needs one "
                                 "per language (examples/data/prepare_multilingual.py writes them)")
            languages = nn.Embedding(len(tags), args.encoder_embed_dim)
            nn.init.normal_(languages.weight, mean=0, std=args.encoder_embed_dim ** -0.5)
        for part, role in ((model.encoder, "source"), (model.decoder, "decoder input")):
            part.embed_positions = PositionsAndLanguage(
                part.embed_positions, languages, lang_of_token, dictionary.pad(), dictionary, role)
        return model

    def forward(self, src_tokens, src_lengths, prev_output_tokens, decoder_positions=None,
                return_all_hiddens: bool = True, features_only: bool = False,
                alignment_layer=None, alignment_heads=None):
        if decoder_positions is None:
            return super().forward(src_tokens, src_lengths, prev_output_tokens, return_all_hiddens,
                                   features_only, alignment_layer, alignment_heads)
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths,
                                   return_all_hiddens=return_all_hiddens)
        # Pre-training reconstructs the source sentence: its language is the decoder's.
        encoder_embed = self.encoder.embed_positions
        language = (encoder_embed.language_of(src_tokens)
                    if encoder_embed.languages is not None else None)
        context = self.decoder.embed_positions.explicit(decoder_positions, language)
        with context:
            return self.decoder(prev_output_tokens, encoder_out=encoder_out,
                                features_only=features_only, alignment_layer=alignment_layer,
                                alignment_heads=alignment_heads, src_lengths=src_lengths,
                                return_all_hiddens=return_all_hiddens)


def mass_defaults(args):
    args.no_language_embeddings = getattr(args, "no_language_embeddings", False)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    args.encoder_learned_pos = getattr(args, "encoder_learned_pos", True)
    args.decoder_learned_pos = getattr(args, "decoder_learned_pos", True)
    args.activation_fn = getattr(args, "activation_fn", "gelu")
    base_architecture(args)


@register_model_architecture("mass", "mass_base")
def mass_base(args):
    """Song et al., 2019, Sec. 4.1 and microsoft/MASS MASS-unsupNMT (XLM fork): 6+6 layers,
    d 1024, FFN 4096, 8 heads, GELU, learned positions, dropout and attention dropout 0.1,
    embeddings shared by encoder, decoder and output."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 1024)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 4096)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", args.encoder_embed_dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", args.encoder_ffn_embed_dim)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 8)
    args.dropout = getattr(args, "dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    mass_defaults(args)


@register_model_architecture("mass", "csp_base")
def csp_base(args):
    """Yang et al., 2020, Sec. 4 (supervised): Transformer base, 6+6 layers, d 512, 8 heads,
    FFN 2048, dropout 0.1, shared embeddings. The rest is MASS's (the paper follows it without
    saying more): GELU, learned positions, language embeddings."""
    args.dropout = getattr(args, "dropout", 0.1)
    mass_defaults(args)


@register_model_architecture("mass", "csp_unsupervised")
def csp_unsupervised(args):
    """Yang et al., 2020, Sec. 4 (unsupervised): csp_base with 4+4 layers."""
    args.encoder_layers = getattr(args, "encoder_layers", 4)
    args.decoder_layers = getattr(args, "decoder_layers", 4)
    csp_base(args)


@register_model_architecture("mass", "mass_tiny")
def mass_tiny(args):
    """CPU size (the benchmarks' and recipes' default): 3+3 pre-norm layers, d 256, FFN 1024,
    4 heads."""
    for side in ("encoder", "decoder"):
        setattr(args, f"{side}_layers", getattr(args, f"{side}_layers", 3))
        setattr(args, f"{side}_embed_dim", getattr(args, f"{side}_embed_dim", 256))
        setattr(args, f"{side}_ffn_embed_dim", getattr(args, f"{side}_ffn_embed_dim", 1024))
        setattr(args, f"{side}_attention_heads", getattr(args, f"{side}_attention_heads", 4))
        setattr(args, f"{side}_normalize_before", getattr(args, f"{side}_normalize_before", True))
    args.dropout = getattr(args, "dropout", 0.1)
    mass_defaults(args)
