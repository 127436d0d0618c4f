"""Mask-Predict (Ghazvininejad et al., EMNLP 2019) on a BERT vocabulary, on top of fairseq's CMLM:
[MASK] as the mask symbol, AB-Net's top-B length beam (Sec. 4.1), canvases bounded by the
decoder's positions and fairseq's ``--max-len-a/--max-len-b``, and a clean adaptive stop."""
from typing import NamedTuple, Optional

import torch
from fairseq import utils
from fairseq.models.nat.cmlm_transformer import _skeptical_unmasking


# fairseq's NAT decoder with --pred-length-offset predicts the length minus the source length,
# shifted by this (NATransformerDecoder.forward_length_prediction).
NAT_LENGTH_OFFSET = 128


class MaskPredictOut(NamedTuple):
    """fairseq's ``DecoderOut`` plus the ranked canvas lengths, kept for the top-B length beam."""

    output_tokens: torch.Tensor
    output_scores: torch.Tensor
    attn: Optional[torch.Tensor]
    step: int
    max_step: int
    history: Optional[list]
    ranked_lengths: Optional[torch.Tensor] = None  # B x classes, most probable allowed first


def rank_lengths(length_lprobs, class_lengths, max_lengths):
    """Canvas lengths (incl. [CLS]/[SEP]) by decreasing probability, B x classes: class k of
    sentence i means ``class_lengths[i, k]`` tokens. Lengths outside [2, ``max_lengths[i]``]
    rank last and are clamped into it, so no canvas outgrows the decoder's positions."""
    allowed = (class_lengths >= 2) & (class_lengths <= max_lengths[:, None])
    order = length_lprobs.masked_fill(~allowed, float("-inf")).argsort(dim=-1, descending=True)
    ranked = class_lengths.gather(1, order)
    return torch.minimum(ranked.clamp(min=2), max_lengths[:, None])


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

    # fairseq's --max-len-a/--max-len-b: canvas length <= a * source length + b (the task's
    # build_generator sets them; None: bounded by the decoder's positions only).
    max_len_a, max_len_b = 0.0, None

    def use_mask_token(self):
        self.unk = self.tgt_dict.mask()

    def max_canvas_lengths(self, src_tokens):
        """B longest canvases allowed: the decoder's positions, and a * |x| + b."""
        bound = torch.full((src_tokens.size(0),), self.decoder.max_positions(),
                           dtype=torch.long, device=src_tokens.device)
        if self.max_len_b is not None:
            source_lengths = src_tokens.ne(self.pad).sum(1)
            bound = torch.minimum(bound, (self.max_len_a * source_lengths + self.max_len_b).long())
        return bound.clamp(min=2)

    def class_lengths(self, encoder_out, num_classes):
        """B x classes: the canvas length each length class stands for."""
        classes = torch.arange(num_classes, device=encoder_out["encoder_out"][0].device)
        if not getattr(self.decoder, "pred_length_offset", False):
            return classes.expand(encoder_out["encoder_out"][0].size(1), -1)
        source_lengths = (~encoder_out["encoder_padding_mask"][0]).sum(1)
        return classes[None, :] - NAT_LENGTH_OFFSET + source_lengths[:, None]

    def initialize_output_tokens(self, encoder_out, src_tokens):
        length_lprobs = self.decoder.forward_length(normalize=True, encoder_out=encoder_out)
        ranked = rank_lengths(length_lprobs, self.class_lengths(encoder_out, length_lprobs.size(1)),
                              self.max_canvas_lengths(src_tokens))
        tokens = masked_canvas(ranked[:, 0], self.bos, self.eos, self.pad, self.unk)
        return MaskPredictOut(
            output_tokens=tokens,
            output_scores=tokens.new_zeros(tokens.size()).type_as(length_lprobs),
            attn=None, step=0, max_step=0, history=None, ranked_lengths=ranked,
        )

    def regenerate_length_beam(self, decoder_out, beam_size):
        """Sec. 4.1, AB-Net: "taking the top B length predictions into consideration" (fairseq's
        CMLM uses a window around the best length instead)."""
        top_lengths = decoder_out.ranked_lengths[:, :beam_size]  # B x beam
        tokens = masked_canvas(top_lengths.reshape(-1), self.bos, self.eos, self.pad, self.unk)
        return decoder_out._replace(
            output_tokens=tokens,
            output_scores=tokens.new_zeros(tokens.size()).type_as(decoder_out.output_scores),
            ranked_lengths=None,
        )

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
