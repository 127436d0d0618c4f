"""The multi-task loss of the speech family: the sum of label-smoothed cross-entropies of the
tasks in a batch, plus whatever a method adds on the encodings (``extra_losses``).

A triple batch trains its tasks (ST, ASR, MT) on the same sentences, an external-MT batch trains
MT (ConST's ``multitask_crossentropy_with_contrastive_with_extra_mt``). Each task's loss is its
mean over its own target tokens, then::

    L = w_st * CE_ST + w_asr * CE_ASR + w_mt * CE_MT        (weights 1, label smoothing 0.1)

fairseq divides the returned loss by ``sample_size``, so each task's token sum is rescaled to
the first task's token count. The speech is encoded once per batch for ST and ASR.
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion, LabelSmoothedCrossEntropyCriterionConfig,
)

from ptnmt_fairseq.common.modeling import refuse_torch_ddp
from ptnmt_fairseq.common.speech.dataset import TASKS


@dataclass
class SpeechTextMultitaskConfig(LabelSmoothedCrossEntropyCriterionConfig):
    st_weight: float = field(default=1.0, metadata={"help": "weight of the ST loss"})
    asr_weight: float = field(default=1.0, metadata={"help": "weight of the ASR loss"})
    mt_weight: float = field(default=1.0, metadata={"help": "weight of the MT loss"})


class SpeechTextMultitaskCriterion(LabelSmoothedCrossEntropyCriterion):
    """A method registers a subclass; ``extra_losses`` adds terms computed on the encodings."""

    extra_loss_names = ()

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0,
                 report_accuracy=False, st_weight=1.0, asr_weight=1.0, mt_weight=1.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size,
                         report_accuracy)
        self.weights = {"st": st_weight, "asr": asr_weight, "mt": mt_weight}

    def forward(self, model, sample, reduce=True):
        refuse_torch_ddp(model, f"the {type(self).__name__} criterion")
        sample_size = sample["nsentences"] if self.sentence_avg else sample["ntokens"]
        encodings, total, nll_first = {}, 0.0, None
        logging_output = {"ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
                          "sample_size": sample_size,
                          "audio_seconds": sample.get("audio_seconds", 0.0)}
        for name, batch in sample["tasks"].items():
            net_input = batch["net_input"]
            source = net_input["src_tokens"]
            modality = "audio" if source.is_floating_point() else "text"
            if modality not in encodings:  # ST and ASR share the speech encoding
                encodings[modality] = model.encoder(source, net_input["src_lengths"])
            net_output = model.decoder(net_input["prev_output_tokens"],
                                       encoder_out=encodings[modality])
            loss, nll_loss = self.compute_loss(model, net_output, batch, reduce=reduce)
            scale = sample_size / (batch["target"].size(0) if self.sentence_avg
                                   else batch["ntokens"])
            total = total + self.weights[name] * scale * loss
            nll_first = nll_loss if nll_first is None else nll_first
            logging_output[f"{name}_loss"] = loss.data
            logging_output[f"{name}_ntokens"] = batch["ntokens"]
        for name, loss in self.extra_losses(model, sample, encodings).items():
            total = total + loss  # already in the units of sample_size (a sum)
            logging_output[f"{name}_loss"] = loss.data
            logging_output[f"{name}_sample_size"] = sample_size
        logging_output["loss"] = total.data
        logging_output["nll_loss"] = nll_first.data
        return total, sample_size, logging_output

    def extra_losses(self, model, sample, encodings):
        """{name: weighted loss summed over the batch} from ``encodings`` ({"audio"|"text":
        encoder output}); fairseq divides it by ``sample_size`` with the rest."""
        return {}

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        for name in TASKS:
            ntokens = sum(log.get(f"{name}_ntokens", 0) for log in logging_outputs)
            if ntokens:
                loss = sum(log.get(f"{name}_loss", 0) for log in logging_outputs)
                metrics.log_scalar(f"{name}_loss", loss / ntokens / torch.log(torch.tensor(2.0)),
                                   ntokens, round=3)
        for name in cls.extra_loss_names:
            # over the batches that computed it (not external-MT batches), in bits per
            # sample_size unit, as fairseq's loss
            size = sum(log.get(f"{name}_sample_size", 0) for log in logging_outputs)
            if size:
                loss = sum(log.get(f"{name}_loss", 0) for log in logging_outputs)
                metrics.log_scalar(f"{name}_loss", utils.item(loss) / size / math.log(2), size,
                                   round=3)
        seconds = sum(log.get("audio_seconds", 0.0) for log in logging_outputs)
        metrics.log_scalar_sum("audio_seconds", utils.item(seconds), round=1)
