"""``xstnet_multitask``: the sum of label-smoothed cross-entropies of the tasks in a batch
(``common/speech/criterion.py``): CE_ST + CE_ASR + CE_MT on a triple batch, CE_MT on an external-MT
batch, each averaged over its own target tokens, weights 1 and label smoothing 0.1 (ConST's
``multitask_crossentropy_with_contrastive_with_extra_mt`` with contrastive weight 0, which its
author says is XSTNet, ConST issue #1).
"""
from dataclasses import dataclass

from fairseq.criterions import register_criterion

from ptnmt_fairseq.common.speech.criterion import (
    SpeechTextMultitaskConfig, SpeechTextMultitaskCriterion,
)


@dataclass
class XSTNetMultitaskConfig(SpeechTextMultitaskConfig):
    pass


@register_criterion("xstnet_multitask", dataclass=XSTNetMultitaskConfig)
class XSTNetMultitaskCriterion(SpeechTextMultitaskCriterion):
    pass
