"""Stage 1 of C-MLM distillation: BERT fine-tuned as a conditional masked language model
(Chen et al., ACL 2020, Sec. 3.1; ChenRocks/Distill-BERT-Textgen, ``cmlm/data.py``,
``cmlm/model.py``, ``run_cmlm_finetuning.py``).

Input ``[CLS] x [SEP] y [SEP]`` with segment 0 over ``[CLS] x [SEP]`` and segment 1 over
``y [SEP]``; each target token, the final [SEP] included, is replaced by [MASK] with probability
0.15 (always [MASK], no 80/10/10; redrawn when nothing is masked); the source is never masked.
The loss is the cross-entropy of the masked target tokens only.

The data are the student's, binarised for ``translation_bert`` (``BertDictionary``: ids are BERT
ids); source, target and the teacher's BERT must share one vocabulary (the authors use one
multilingual BERT for both sides), which is checked. The output layer is a fresh matrix over the
student's target dictionary, untied from the input embeddings, each row initialised from BERT's
embedding of that token and its bias at 0 (as the authors' code): with a random output layer the
fine-tuning starts from a teacher that knows no word. The MLM transform (dense + GELU +
LayerNorm) comes from the checkpoint when it has one (``BertForMaskedLM``), else it is fresh.

Optimisation as BERT's: ``--optimizer adam --lr 5e-5 --weight-decay 0.01 --lr-scheduler
polynomial_decay --warmup-updates W --total-num-update N`` (linear warm-up, linear decay to 0).
"""
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.data import BaseWrapperDataset, data_utils
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.tasks import register_task
from omegaconf import II

from ptnmt_fairseq.common.bert.pretrained import check_bert_vocabulary, load_masked_lm
from ptnmt_fairseq.common.bert.task import TranslationBertConfig, TranslationBertTask
from ptnmt_fairseq.common.modeling import log_parameter_counts

logger = logging.getLogger(__name__)

MASK_PROB = 0.15  # the authors' cmlm/data.py
BERT_MAX_POSITIONS = 512


def mask_target(target_length: int, rng: np.random.RandomState, prob: float = MASK_PROB):
    """Bool mask over ``target_length`` target positions (final [SEP] included): i.i.d. with
    ``prob``, redrawn until at least one position is masked (the authors' rule)."""
    while True:
        mask = rng.random_sample(target_length) < prob
        if mask.any():
            return mask


def cmlm_input(source, target, masked, mask_id: int, cls_id: int):
    """(input_ids, token_type_ids) of ``[CLS] x [SEP] y [SEP]``: ``source`` is x [SEP] (or
    [CLS] x [SEP]), ``target`` y [SEP]; ``masked`` marks the target positions replaced by
    [MASK]."""
    if len(source) and source[0] == cls_id:
        source = source[1:]
    shown = target.masked_fill(masked, mask_id)
    input_ids = torch.cat([source.new_tensor([cls_id]), source, shown])
    segments = torch.cat([torch.zeros(len(source) + 1, dtype=torch.long),
                          torch.ones(len(target), dtype=torch.long)])
    return input_ids, segments


class CmlmDataset(BaseWrapperDataset):
    """Pairs of a ``translation_bert`` dataset as C-MLM examples. Item i is masked with the seed
    (seed, epoch, i), so validation is masked once and the same way every time, and training is
    remasked every epoch. Pairs longer than BERT's 512 positions are dropped (fairseq warns with
their count, or stops on a validation set unless --skip-invalid-size-inputs-valid-test)."""

    def __init__(self, dataset, dictionary, seed: int, mask_prob: float = MASK_PROB):
        super().__init__(dataset)
        self.dictionary, self.seed, self.mask_prob = dictionary, seed, mask_prob
        self.epoch = 1

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epoch = epoch

    def __getitem__(self, index):
        item = self.dataset[index]
        with data_utils.numpy_seed(self.seed, self.epoch, index):
            masked = torch.from_numpy(mask_target(len(item["target"]), np.random, self.mask_prob))
        input_ids, segments = cmlm_input(item["source"], item["target"], masked,
                                         self.dictionary.mask(), self.dictionary.bos())
        labels = torch.full_like(input_ids, self.dictionary.pad())
        labels[-len(item["target"]):][masked] = item["target"][masked]
        return {"id": index, "input_ids": input_ids, "segments": segments, "labels": labels}

    def size(self, index):
        return self.dataset.src_sizes[index] + self.dataset.tgt_sizes[index]

    def num_tokens(self, index):
        return self.size(index)

    def num_tokens_vec(self, indices):
        # translation_bert sources hold their [CLS]: [CLS] x [SEP] + y [SEP] positions
        return self.dataset.src_sizes[indices] + self.dataset.tgt_sizes[indices]

    def filter_indices_by_size(self, indices, max_sizes):
        """Drop pairs longer than ``max_sizes`` (BERT's 512 positions) *together*: fairseq's
        paired filter checks each side alone. Returns (kept, ignored) as fairseq's."""
        limit = min(max_sizes) if isinstance(max_sizes, (tuple, list)) else max_sizes
        too_long = self.num_tokens_vec(indices) > limit
        return indices[~too_long], indices[too_long].tolist()

    def collater(self, samples):
        if not samples:
            return {}
        pad = self.dictionary.pad()

        def stack(key, value):
            return data_utils.collate_tokens([s[key] for s in samples], value, left_pad=False)

        input_ids = stack("input_ids", pad)
        labels = stack("labels", pad)
        return {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": int(labels.ne(pad).sum()),
            "net_input": {"input_ids": input_ids, "token_type_ids": stack("segments", 0),
                          "attention_mask": input_ids.ne(pad).long()},
            "target": labels,
        }


@dataclass
class CmlmFinetuneConfig(TranslationBertConfig):
    bert: str = field(default="", metadata={"help": "the teacher's BERT (name or directory); "
                                                    "its vocab.txt must be the data's dictionary"})
    mask_prob: float = field(default=MASK_PROB, metadata={
        "help": "probability of masking each target token (the authors: 0.15)"})
    seed: int = II("common.seed")


@register_task("cmlm_finetune", dataclass=CmlmFinetuneConfig)
class CmlmFinetuneTask(TranslationBertTask):
    """Stage 1: fine-tune ``--bert`` as a C-MLM on the student's ``translation_bert`` data."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        task = super().setup_task(cfg, **kwargs)
        for role, dictionary in (("source", task.src_dict), ("target", task.tgt_dict)):
            check_bert_vocabulary(cfg.bert, "--bert", dictionary, role)
        return task

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch, combine, **kwargs)
        self.datasets[split] = CmlmDataset(self.datasets[split], self.tgt_dict, self.cfg.seed,
                                           self.cfg.mask_prob)

    def max_positions(self):
        return BERT_MAX_POSITIONS

    def build_generator(self, *args, **kwargs):
        raise ValueError("a C-MLM teacher does not generate: dump its soft labels with "
                         "python -m ptnmt_fairseq.cmlm_kd.dump_soft_labels")


@register_model("cmlm_teacher")
class CmlmTeacher(BaseFairseqModel):
    """BERT + MLM transform + an output layer over the student's target dictionary.
    Forward: input_ids, token_type_ids, attention_mask (B x L) -> logits B x L x V."""

    def __init__(self, bert, transform, output):
        super().__init__()
        self.bert, self.transform, self.output = bert, transform, output

    @staticmethod
    def add_args(parser):
        parser.add_argument("--bert-dropout", type=float, metavar="D",
                            help="every dropout of BERT (the authors overwrite them with 0.1)")

    @classmethod
    def build_model(cls, args, task):
        cmlm_teacher_base(args)
        masked_lm, fresh = load_masked_lm(task.cfg.bert, "--bert")
        for module in masked_lm.modules():
            if isinstance(module, nn.Dropout):
                module.p = args.bert_dropout
        embeddings = masked_lm.bert.get_input_embeddings().weight
        dictionary = task.target_dictionary
        if len(dictionary) != embeddings.size(0):
            raise ValueError(f"--bert {task.cfg.bert}: {embeddings.size(0)} embeddings for a "
                             f"{len(dictionary)}-token target dictionary")
        output = nn.Linear(embeddings.size(1), len(dictionary))
        with torch.no_grad():  # row v = BERT's embedding of token v (ids are BERT ids)
            output.weight.copy_(embeddings)
            output.bias.zero_()
        if fresh:
            logger.info(f"--bert {task.cfg.bert} has no MLM head: a fresh transform")
        model = cls(masked_lm.bert, masked_lm.cls.predictions.transform, output)
        log_parameter_counts(model, "C-MLM teacher", f"output layer over {len(dictionary)} ids")
        return model

    def forward(self, input_ids, token_type_ids, attention_mask, predict=None):
        """Logits B x L x V; with ``predict`` (B x L bool), N x V of its N true positions in
        row-major order: on short pairs the output layer over the vocabulary costs as much as
        BERT itself, and only the masked target positions are scored."""
        hidden = self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                           attention_mask=attention_mask).last_hidden_state
        if predict is not None:
            hidden = hidden[predict]
        return self.output(self.transform(hidden))

    def max_positions(self):
        return BERT_MAX_POSITIONS


@register_model_architecture("cmlm_teacher", "cmlm_teacher")
def cmlm_teacher_base(args):
    args.bert_dropout = getattr(args, "bert_dropout", None)
    if args.bert_dropout is None:
        args.bert_dropout = 0.1


@dataclass
class CmlmCriterionConfig(FairseqDataclass):
    pass


@register_criterion("cmlm", dataclass=CmlmCriterionConfig)
class CmlmCriterion(FairseqCriterion):
    """Cross-entropy of the masked target tokens (the C-MLM objective, Sec. 3.1); also logs
    their accuracy. sample_size: the number of masked tokens."""

    def forward(self, model, sample, reduce=True):
        labels = sample["target"]
        chosen = labels.ne(self.padding_idx)
        masked_logits = model(**sample["net_input"], predict=chosen).float()
        loss = F.cross_entropy(masked_logits, labels[chosen], reduction="sum")
        correct = masked_logits.argmax(-1).eq(labels[chosen]).sum()
        n = int(chosen.sum())
        return loss, n, {"loss": loss.data, "ntokens": n, "nsentences": sample["nsentences"],
                         "sample_size": n, "n_correct": correct.data}

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        n = sum(log.get("sample_size", 0) for log in logging_outputs)
        correct = sum(log.get("n_correct", 0) for log in logging_outputs)
        metrics.log_scalar("loss", utils.item(loss) / max(n, 1) / np.log(2), n, round=3)
        metrics.log_scalar("accuracy", 100.0 * utils.item(correct) / max(n, 1), n, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
