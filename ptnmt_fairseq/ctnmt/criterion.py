"""``ctnmt_distill``: CTNMT's training loss with asymptotic distillation (Yang et al., AAAI 2020).

    L = alpha * L_nmt + (1 - alpha) * L_kd            Eq. (5), CTNMT; alpha = 0.9 (Sec. 4.1)

L_nmt is fairseq's label-smoothed cross-entropy (summed over target tokens) and L_kd the
distance of Eq. (4) (``ctnmt.model.distillation_distance``: squared L2 per real source token,
averaged), rescaled by the sample size so that fairseq's division by it leaves
alpha * (L_nmt per token) + (1 - alpha) * L_kd.
"""
from dataclasses import dataclass, field

from fairseq import metrics, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig,
)

from ptnmt_fairseq.common.modeling import report_accuracy


@dataclass
class CtnmtDistillConfig(LabelSmoothedCrossEntropyCriterionConfig):
    distill_alpha: float = field(default=0.9, metadata={
        "help": "alpha of Eq. (5): weight of the translation loss, 1 - alpha that of the "
                "distillation distance (paper: 0.9)"})


@register_criterion("ctnmt_distill", dataclass=CtnmtDistillConfig)
class CtnmtDistillCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0,
                 report_accuracy=False, distill_alpha=0.9):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size,
                         report_accuracy)
        if not 0 <= distill_alpha <= 1:
            raise ValueError(f"--distill-alpha {distill_alpha}: must be in [0, 1]")
        self.alpha = distill_alpha

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        distance = net_output[1].get("distill_distance")
        if distance is None:
            raise ValueError("criterion ctnmt_distill needs a model trained with "
                             "--asymptotic-distillation (arch ctnmt); without it use "
                             "label_smoothed_cross_entropy")
        nmt_loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        loss = self.alpha * nmt_loss + (1 - self.alpha) * distance * sample_size  # Eq. (5)
        logging_output = {
            "loss": loss.data, "nll_loss": nll_loss.data,
            "distill_distance": distance.data * sample_size, "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0), "sample_size": sample_size,
        }
        report_accuracy(self, model, net_output, sample, logging_output)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        distance = sum(log.get("distill_distance", 0) for log in logging_outputs)
        metrics.log_scalar("distill_distance", utils.item(distance) / max(sample_size, 1),
                           sample_size, round=4)
