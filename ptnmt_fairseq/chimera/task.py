"""``chimera`` task: ST and MT through the shared semantic memory, in two stages (Chimera,
Han et al., 2021); the data, batching and generation are the speech family's
(``common/speech/task.py``).

1. MT pre-training: ``--train-tasks mt --external-mt train_mt.tsv``: the text path and the
   memory learn translation from the external MT pairs and the triples' text; no audio is read.
2. ST fine-tuning: ``--train-tasks st,mt --external-mt train_mt.tsv --finetune-from-model
   STAGE1/checkpoint_best.pt``: a triple batch trains ST and MT on the same sentences and the
   contrastive loss between their memories (criterion ``chimera_st_mt_contrastive``); external
   MT batches keep the text path trained.

``--train-tasks st`` trains ST alone through the memory. Both stages use the same model, so the
MT checkpoint loads into the ST stage with every key.
"""
from dataclasses import dataclass, field

from fairseq.tasks import register_task

from ptnmt_fairseq.common.speech.task import SpeechTextTask, SpeechTextTaskConfig


@dataclass
class ChimeraTaskConfig(SpeechTextTaskConfig):
    train_tasks: str = field(
        default="st,mt",
        metadata={"help": "comma-separated losses on the triples: stage 1 'mt', stage 2 'st,mt' "
                          "(ST alone through the memory: 'st')"},
    )


@register_task("chimera", dataclass=ChimeraTaskConfig)
class ChimeraTask(SpeechTextTask):
    pass
