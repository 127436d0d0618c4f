"""``xstnet`` task: speech translation, ASR and MT on one dictionary, in progressive stages
(XSTNet, "Don't stop training D_MT-ext"); the data, batching and generation are the speech
family's (``common/speech/task.py``).

1. MT pre-training: ``--train-tasks mt --external-mt train_mt.tsv``.
2. Multi-task fine-tuning: ``--train-tasks st,asr,mt --external-mt train_mt.tsv
   --finetune-from-model STAGE1/checkpoint_best.pt``: a triple batch trains ST, ASR and MT on the
   same sentences; external MT batches keep training MT.

``--train-tasks st`` is the ST-only baseline and ``--train-tasks asr`` the ASR half of a cascade.
"""
from dataclasses import dataclass

from fairseq.tasks import register_task

from ptnmt_fairseq.common.language_tokens import AUDIO_TAG
from ptnmt_fairseq.common.speech.task import SpeechTextTask, SpeechTextTaskConfig


@dataclass
class XSTNetTaskConfig(SpeechTextTaskConfig):
    pass


@register_task("xstnet", dataclass=XSTNetTaskConfig)
class XSTNetTask(SpeechTextTask):
    source_tags = (AUDIO_TAG,)  # the encoder prepends <audio>'s embedding to speech
