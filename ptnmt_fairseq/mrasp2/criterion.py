"""``label_smoothed_cross_entropy_with_contrastive``: mRASP2's training loss (Pan et al., 2021).

    L = L_ce + lambda * |s| * L_ctr          (|s|: the batch's target tokens per sentence)

L_ce is fairseq's label-smoothed cross-entropy (summed over tokens) and L_ctr the contrastive
loss of ``ptnmt_fairseq/common/contrastive.py`` (summed over sentences), rescaled by
ntokens / nsentences as in the authors' criterion so that fairseq's division by the token count
leaves lambda * (mean contrastive loss per sentence). The positive of a source is its
translation fed to the *encoder* with its language token, ``LANG_TOK_TGT y </s>``, built here
from the batch (the decoder's first input is that token).
"""
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig,
)

from ptnmt_fairseq.common.contrastive import DEFAULT_LAMBDA, DEFAULT_TEMPERATURE, contrastive_loss
from ptnmt_fairseq.common.modeling import masked_mean, refuse_torch_ddp


@dataclass
class ContrastiveCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    contrastive_lambda: float = field(default=DEFAULT_LAMBDA, metadata={
        "help": "weight of the contrastive loss (mRASP2 configs: 1.0; 0 turns it off)"})
    temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={
        "help": "temperature of the contrastive softmax (mRASP2 configs: 0.1)"})


def target_as_source(sample, pad):
    """``LANG_TOK_TGT y_1 ... y_m </s>`` per sentence (right-padded) and its lengths."""
    first = sample["net_input"]["prev_output_tokens"][:, :1]
    tokens = torch.cat([first, sample["target"]], dim=1)
    return tokens, tokens.ne(pad).sum(dim=1)


def pooled(encoder_out):
    padding = encoder_out["encoder_padding_mask"]
    return masked_mean(encoder_out["encoder_out"][0], padding[0] if padding else None)


@register_criterion("label_smoothed_cross_entropy_with_contrastive",
                    dataclass=ContrastiveCriterionConfig)
class LabelSmoothedCrossEntropyWithContrastiveCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0,
                 report_accuracy=False, contrastive_lambda=DEFAULT_LAMBDA,
                 temperature=DEFAULT_TEMPERATURE):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size,
                         report_accuracy)
        self.contrastive_lambda, self.temperature = contrastive_lambda, temperature

    def forward(self, model, sample, reduce=True):
        refuse_torch_ddp(model, "label_smoothed_cross_entropy_with_contrastive")
        net_input = sample["net_input"]
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        net_output = model.decoder(net_input["prev_output_tokens"], encoder_out=encoder_out)
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        ntokens, nsentences = sample["ntokens"], sample["target"].size(0)
        ctr = loss.new_zeros(())
        if self.contrastive_lambda > 0:
            tokens, lengths = target_as_source(sample, self.padding_idx)
            target_out = model.encoder(tokens, src_lengths=lengths)
            ctr = contrastive_loss(pooled(encoder_out), pooled(target_out), self.temperature)
        total = loss + self.contrastive_lambda * ctr * ntokens / nsentences
        sample_size = nsentences if self.sentence_avg else ntokens
        logging_output = {
            "loss": total.data, "nll_loss": nll_loss.data, "contrastive_loss": ctr.data,
            "ntokens": ntokens, "nsentences": nsentences, "sample_size": sample_size,
        }
        return total, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        nsentences = sum(log.get("nsentences", 0) for log in logging_outputs)
        ctr = sum(log.get("contrastive_loss", 0) for log in logging_outputs)
        metrics.log_scalar("contrastive_loss", utils.item(ctr) / max(nsentences, 1), nsentences,
                           round=3)
