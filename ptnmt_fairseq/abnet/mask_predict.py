"""Mask-Predict (Ghazvininejad et al., EMNLP 2019) on a BERT vocabulary, on top of fairseq's CMLM:
[MASK] as the mask symbol, AB-Net's top-B length beam (Sec. 4.1) and a clean adaptive stop."""
from typing import NamedTuple, Optional

import torch
from fairseq import utils
from fairseq.models.nat.cmlm_transformer import _skeptical_unmasking


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
