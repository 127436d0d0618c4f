"""``chimera_st_mt_contrastive``: ST + MT + the speech-text contrastive loss on the memory
(Chimera, Han et al., 2021; the authors' criterion ``triplet_st_mt_contrastive``)::

    L = w_st CE_ST + w_mt CE_MT + w_ctr L_ctr                  (weights 1 : 1 : 1)

CE_ST and CE_MT are label-smoothed cross-entropies (``common/speech/criterion.py``). L_ctr runs
on a triple batch, whose speech and transcript are both encoded: for each sentence, the M text
memory slots t_i against its M speech memory slots s_j (``common/contrastive.py``)::

    L_ctr = - sum_sentences sum_i log [ exp(cos(t_i, s_i) / tau) / sum_j exp(cos(t_i, s_j) / tau) ]

tau = 0.1. The softmax axis is the authors': for each *text* slot the softmax runs over the
sentence's *speech* slots (their ``cross_entropy`` takes the speech slots as the class
dimension), so each text slot must pick out its own speech slot among the M: the text memory,
which MT data trains, is the anchor, and the speech slots are what is told apart. Negatives are
the other slots of the same sentence only, and neither side is detached (as the authors), so
both memories move. L_ctr is a sum, divided like
the cross-entropies by the batch's target tokens (``sample_size``), as in the authors' code.
External MT batches carry no speech, so they get CE_MT only.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion

from ptnmt_fairseq.common.contrastive import DEFAULT_TEMPERATURE, contrastive_loss
from ptnmt_fairseq.common.speech.criterion import (
    SpeechTextMultitaskConfig, SpeechTextMultitaskCriterion,
)


@dataclass
class ChimeraCriterionConfig(SpeechTextMultitaskConfig):
    contrastive_weight: float = field(default=1.0, metadata={
        "help": "weight of the speech-text contrastive loss on the memory (authors: 1; 0 = off)"})
    contrastive_temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={
        "help": "temperature tau of the contrastive loss (authors: 0.1)"})


def memory_slots(encoder_out):
    """The memory of an encoder output as B x M x d."""
    return encoder_out["encoder_out"][0].transpose(0, 1)


@register_criterion("chimera_st_mt_contrastive", dataclass=ChimeraCriterionConfig)
class ChimeraCriterion(SpeechTextMultitaskCriterion):
    extra_loss_names = ("contrastive",)

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0,
                 report_accuracy=False, st_weight=1.0, asr_weight=1.0, mt_weight=1.0,
                 contrastive_weight=1.0, contrastive_temperature=DEFAULT_TEMPERATURE):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size,
                         report_accuracy, st_weight, asr_weight, mt_weight)
        if contrastive_temperature <= 0:
            raise ValueError(f"--contrastive-temperature {contrastive_temperature} must be > 0")
        self.contrastive_weight = contrastive_weight
        self.temperature = contrastive_temperature

    def extra_losses(self, model, sample, encodings):
        if self.contrastive_weight == 0 or not {"audio", "text"} <= encodings.keys():
            return {}
        loss = contrastive_loss(memory_slots(encodings["text"]), memory_slots(encodings["audio"]),
                                self.temperature)
        return {"contrastive": self.contrastive_weight * loss}
