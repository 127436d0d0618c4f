"""``cmlm_kd``: distillation from a C-MLM teacher's soft labels into any fairseq seq2seq model
(Chen et al., ACL 2020, Eq. 4-5; the authors' student code ChenRocks/Distill-BERT-Textgen-ONMT,
``onmt/utils/loss.py::BertKDLossCompute``)::

    L = alpha * L_kd + (1 - alpha) * L_xe                                        Eq. (5)
    L_kd = - sum_t sum_{k<=K} softmax(z_t / T)_k * log p_student(i_{t,k})        Eq. (4), top-K

z_t and i_t are the teacher's top-K logits and their ids at target position t (stored once by
``dump_soft_labels``); the temperature T applies to the teacher only and its distribution is
renormalised over the K ids (the paper's footnote 8 and Sec. 4.2); the student's log-probabilities
are its ordinary T = 1 log-softmax over the whole vocabulary; there is no T^2 factor. L_xe is
fairseq's label-smoothed cross-entropy, with its smoothing eps / (V - 1) (the authors' OpenNMT code
uses eps / (V - 2)). Both terms are sums over the non-pad target tokens, which fairseq divides by
their number. alpha = 0 is exactly ``label_smoothed_cross_entropy``.

A batch without soft labels (validation) gets L_xe alone; a *training* batch without them is an
error when alpha > 0 (``--soft-labels`` of the task names them). The KD term is logged as
``kd_loss`` (bits per token).
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig,
    label_smoothed_nll_loss,
)

from ptnmt_fairseq.common.modeling import report_accuracy


@dataclass
class CmlmKdConfig(LabelSmoothedCrossEntropyCriterionConfig):
    kd_alpha: float = field(default=0.5, metadata={
        "help": "weight alpha of the KD term (paper: IWSLT De-En 0.5, En-Vi and WMT 0.1)"})
    kd_temperature: float = field(default=10.0, metadata={
        "help": "temperature T on the teacher's logits (paper: De-En 10, En-Vi and WMT 5)"})


def kd_loss(lprobs, soft_ids, soft_logits, temperature: float, pad_mask):
    """Eq. (4) over the teacher's top-K, summed over non-pad positions.

    lprobs: N x V student log-probabilities; soft_ids, soft_logits: N x K; pad_mask: N (True =
    pad). Returns a scalar."""
    teacher = torch.softmax(soft_logits.float() / temperature, dim=-1)
    student = lprobs.gather(-1, soft_ids.long()).float()
    per_token = -(teacher * student).sum(-1)
    return per_token.masked_fill(pad_mask, 0.0).sum()


@register_criterion("cmlm_kd", dataclass=CmlmKdConfig)
class CmlmKdCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0,
                 report_accuracy=False, kd_alpha=0.5, kd_temperature=10.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size,
                         report_accuracy)
        if not 0.0 <= kd_alpha <= 1.0 or kd_temperature <= 0:
            raise ValueError(f"--kd-alpha {kd_alpha} must be in [0, 1] and --kd-temperature "
                             f"{kd_temperature} > 0")
        self.alpha, self.temperature = kd_alpha, kd_temperature

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        # one log-softmax over the vocabulary for both terms (fairseq's compute_loss would make
        # a second one, as costly as the small student's whole output layer)
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        xe, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps,
                                               ignore_index=self.padding_idx, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {"nll_loss": nll_loss.data, "ntokens": sample["ntokens"],
                          "nsentences": sample["target"].size(0), "sample_size": sample_size}
        loss = xe
        if "soft_ids" in sample and self.alpha > 0:
            soft_ids, soft_logits = (sample[key][:, self.ignore_prefix_size:]
                                     for key in ("soft_ids", "soft_logits"))
            k = soft_ids.size(-1)
            kd = kd_loss(lprobs, soft_ids.reshape(-1, k), soft_logits.reshape(-1, k),
                         self.temperature, target.eq(self.padding_idx))
            loss = self.alpha * kd + (1.0 - self.alpha) * xe
            logging_output["kd_loss"] = kd.data
        elif model.training and self.alpha > 0:
            raise ValueError("cmlm_kd: a training batch without soft labels; pass the task's "
                             "--soft-labels DIR (python -m ptnmt_fairseq.cmlm_kd.dump_soft_labels)"
                             " or --kd-alpha 0")
        logging_output["loss"] = loss.data
        report_accuracy(self, model, net_output, sample, logging_output)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if any("kd_loss" in log for log in logging_outputs):
            ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
            kd = sum(log.get("kd_loss", 0) for log in logging_outputs)
            metrics.log_scalar("kd_loss", utils.item(kd) / max(ntokens, 1) / math.log(2),
                               ntokens, round=3)
