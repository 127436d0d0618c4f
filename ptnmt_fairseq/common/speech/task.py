"""Speech translation tasks on <speech, transcript, translation> triples, shared by the speech
methods (XSTNet: task ``xstnet``; Chimera: task ``chimera``), each registering a subclass.

Data (``DATA``): ``config.yaml`` in fairseq's speech-to-text format (``vocab_filename``,
``bpe_tokenizer``, ``audio_root``, ``use_sample_rate``) and one manifest per split,
``DATA/<split>.tsv`` (``ptnmt_fairseq/common/speech/dataset.py``). ``--external-mt FILE.tsv`` adds
text-only MT pairs (D_MT-ext) to the training split.

Progressive training, both stages through fairseq-train:

1. MT pre-training: ``--train-tasks mt --external-mt train_mt.tsv``: MT on the external pairs and
   on the triples' transcript/translation pairs. No audio is read.
2. Fine-tuning on the triples: ``--train-tasks st,asr,mt`` (XSTNet) or ``st,mt`` (Chimera)
   ``--external-mt train_mt.tsv --finetune-from-model STAGE1/checkpoint_best.pt``. A triple batch
   trains its tasks on the same sentences; external MT batches (text only, ``--max-tokens-text``
   tokens each, their number per epoch scaled by ``--external-mt-ratio``) keep training MT.

Batches hold one kind of data (fairseq's ``MultiModalityDataset`` and
``GroupedEpochBatchIterator``). Speech batches are sized by ``--max-tokens`` in audio *samples*
(ConST: 1M samples per batch), text batches by ``--max-tokens-text`` tokens.

Generation decodes ``--eval-task`` (default: the first of ``--train-tasks``): ``st`` and ``mt``
scored with ``--scoring sacrebleu``, ``asr`` with ``--scoring wer``. The target-language tag is
the first decoder input, so no ``--prefix-size`` is needed and no tag reaches the output.
"""
import logging
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fairseq.data import Dictionary, encoders
from fairseq.data.audio.data_cfg import S2TDataConfig
from fairseq.data.audio.multi_modality_dataset import ModalityDatasetItem, MultiModalityDataset
from fairseq.data.iterators import GroupedEpochBatchIterator
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II

from ptnmt_fairseq.common.language_tokens import TagAsBosGenerationMixin, tag_index
from ptnmt_fairseq.common.speech.audio import resolve_audio_root
from ptnmt_fairseq.common.speech.dataset import SPEECH_TASKS, TASKS, SpeechTextTripleDataset, load_split

logger = logging.getLogger(__name__)


@dataclass
class SpeechTextTaskConfig(FairseqDataclass):
    data: str = field(default="", metadata={"help": "directory with config.yaml and <split>.tsv"})
    config_yaml: str = field(default="config.yaml", metadata={"help": "config file in DATA"})
    train_tasks: str = field(
        default="st,asr,mt",
        metadata={"help": "comma-separated losses on the triples: stage 1 'mt', stage 2 "
                          "'st,asr,mt' (ST-only baseline: 'st', ASR of a cascade: 'asr')"},
    )
    eval_task: Optional[ChoiceEnum(TASKS)] = field(
        default=None, metadata={"help": "task decoded by fairseq-generate and put first in "
                                        "validation (default: the first of --train-tasks)"},
    )
    external_mt: Optional[str] = field(
        default=None, metadata={"help": "text-only MT manifest (id src_text tgt_text src_lang "
                                        "tgt_lang) added to training, relative to DATA"},
    )
    external_mt_ratio: float = field(
        default=1.0, metadata={"help": "scale the number of external-MT batches per epoch"},
    )
    max_tokens_text: int = field(default=4096, metadata={"help": "tokens per text-only batch"})
    max_audio_samples: int = field(
        default=480000, metadata={"help": "longest audio kept, in samples (ConST: 30 s)"},
    )
    max_text_positions: int = field(default=1024, metadata={"help": "longest text kept"})
    source_lang: Optional[str] = field(default=None, metadata={
        "help": "raw text input (fairseq-interactive, hub, --eval-task mt): its language",
        "argparse_alias": "-s"})
    target_lang: Optional[str] = field(default=None, metadata={
        "help": "raw text input: the output language", "argparse_alias": "-t"})
    skip_bad_audio: bool = field(
        default=False, metadata={"help": "drop rows with missing/unreadable/empty/mismatched "
                                         "audio (logged) instead of stopping"},
    )
    update_freq: Any = II("optimization.update_freq")
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    max_sentences: Optional[int] = II("dataset.batch_size")


def speech_input_error(eval_task):
    return ValueError(
        f"fairseq-interactive and the hub interface translate text, but --eval-task is "
        f"{eval_task!r}: decode speech with fairseq-generate on a manifest, or pass "
        "--eval-task mt to translate text")


class SpeechSource:
    """The source "dictionary" of a speech task: fairseq-generate prints no text for a waveform,
    and fairseq-interactive or the hub interface, which read text, get a clear error."""

    def __init__(self, dictionary, eval_task):
        self.dictionary, self.eval_task = dictionary, eval_task

    def string(self, *args, **kwargs):
        return ""

    def encode_line(self, *args, **kwargs):
        raise speech_input_error(self.eval_task)

    def __getattr__(self, name):  # pad(), eos(), len(): those of the shared dictionary
        return getattr(self.dictionary, name)

    def __len__(self):
        return len(self.dictionary)


class SpeechTextTask(TagAsBosGenerationMixin, FairseqTask):
    """The shared task; a method registers a subclass. ``source_tags``: tags the method's encoder
    needs in the dictionary (XSTNet: ``<audio>``)."""

    one_language_hint = "generate each target language from its own manifest"
    source_tags = ()

    def __init__(self, cfg: SpeechTextTaskConfig, dictionary, data_cfg, bpe):
        super().__init__(cfg)
        self.dictionary, self.data_cfg, self.bpe = dictionary, data_cfg, bpe
        self.train_tasks = parse_tasks(cfg.train_tasks)
        # str(): fairseq's ChoiceEnum members cannot be pickled into DataLoader workers
        self.eval_task = str(cfg.eval_task) if cfg.eval_task else self.train_tasks[0]

    @classmethod
    def setup_task(cls, cfg: SpeechTextTaskConfig, **kwargs):
        config_path = Path(cfg.data) / cfg.config_yaml
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} does not exist (--config-yaml in DATA)")
        data_cfg = S2TDataConfig(config_path)
        dict_path = Path(cfg.data) / data_cfg.vocab_filename
        if not dict_path.is_file():
            raise FileNotFoundError(f"{dict_path} (vocab_filename of {config_path}) does not exist")
        dictionary = Dictionary.load(str(dict_path))
        dictionary.source = str(dict_path)
        for tag in cls.source_tags:
            tag_index(dictionary, tag, f"speech input ({config_path})")
        bpe_cfg = data_cfg.bpe_tokenizer
        bpe = encoders.build_bpe(Namespace(**bpe_cfg)) if bpe_cfg.get("bpe") else None
        logger.info(f"dictionary {dict_path}: {len(dictionary)} types; bpe {bpe_cfg}")
        return cls(cfg, dictionary, data_cfg, bpe)

    @property
    def source_dictionary(self):
        if self.eval_task in SPEECH_TASKS:
            return SpeechSource(self.dictionary, self.eval_task)
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def inference_tags(self):
        """fairseq-interactive / hub: text in, so MT only; the tags of -s and -t."""
        if self.eval_task != "mt":
            raise speech_input_error(self.eval_task)
        return self.direction_tags()

    def split_tasks(self, split):
        if split == self.cfg.train_subset:
            return self.train_tasks
        # Validation and generation: the evaluated task first, the training losses after it.
        return (self.eval_task,) + tuple(t for t in self.train_tasks if t != self.eval_task)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        is_train = split == self.cfg.train_subset
        dataset = self.load_manifest(Path(self.cfg.data) / f"{split}.tsv",
                                     self.split_tasks(split), shuffle=is_train)
        if is_train and self.cfg.external_mt:
            external = self.load_manifest(Path(self.cfg.data) / self.cfg.external_mt, ("mt",))
            logger.info(f"{split}: {len(dataset)} triples ({','.join(dataset.tasks)}) + "
                        f"{len(external)} external MT pairs")
            dataset = MultiModalityDataset([
                self.modality_item("triples", dataset), self.modality_item("external_mt", external),
            ])
        self.datasets[split] = dataset

    def load_manifest(self, path, tasks, shuffle=True):
        return load_split(
            path, self.dictionary, self.bpe, tasks,
            audio_root=resolve_audio_root(self.cfg.data, self.data_cfg.audio_root),
            sample_rate=self.data_cfg.use_sample_rate, skip_bad_audio=self.cfg.skip_bad_audio,
            shuffle=shuffle,
        )

    def dataset_limits(self, dataset: SpeechTextTripleDataset):
        """(max_positions, max_tokens) for one dataset: samples for speech, tokens for text."""
        if dataset.uses_audio:
            return (self.cfg.max_audio_samples, self.cfg.max_text_positions), None
        return (self.cfg.max_text_positions,) * 2, self.cfg.max_tokens_text

    def modality_item(self, name, dataset):
        max_positions, max_tokens = self.dataset_limits(dataset)
        return ModalityDatasetItem(name, dataset, max_positions, max_tokens,
                                   self.cfg.max_sentences)

    def max_positions(self):
        return (self.cfg.max_audio_samples, self.cfg.max_text_positions)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        if not isinstance(dataset, MultiModalityDataset):
            max_positions, text_max_tokens = self.dataset_limits(dataset)
            return super().get_batch_iterator(
                dataset, max_tokens=text_max_tokens or max_tokens, max_sentences=max_sentences,
                max_positions=max_positions, ignore_invalid_inputs=ignore_invalid_inputs,
                required_batch_size_multiple=required_batch_size_multiple, seed=seed,
                num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
                data_buffer_size=data_buffer_size, disable_iterator_cache=disable_iterator_cache,
                skip_remainder_batch=skip_remainder_batch, grouped_shuffling=grouped_shuffling,
                update_epoch_batch_itr=update_epoch_batch_itr,
            )
        triples = dataset.datasets[0]
        if triples.uses_audio:  # --max-tokens counts audio samples in speech batches
            dataset.max_tokens[0] = max_tokens
        dataset.set_epoch(epoch)
        batch_samplers = dataset.get_batch_samplers(
            [1.0, self.cfg.external_mt_ratio], required_batch_size_multiple, seed
        )
        mult_rate = self.batches_per_update(epoch)
        check_group_sizes(batch_samplers, mult_rate * num_shards, ("triples", "external MT"))
        return GroupedEpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater, batch_samplers=batch_samplers,
            seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers,
            epoch=epoch, mult_rate=mult_rate, buffer_size=data_buffer_size,
            skip_remainder_batch=skip_remainder_batch,
        )

    def batches_per_update(self, epoch):
        """--update-freq of ``epoch``: that many batches of one kind follow each other, so an
        update never mixes triples and external MT (fairseq's joint S2T task does the same)."""
        update_freq = list(self.cfg.update_freq or [1])
        return int(update_freq[min(epoch, len(update_freq)) - 1])

    def build_bpe(self, args):
        return self.bpe

    def build_tokenizer(self, args):
        return None


def check_group_sizes(batch_samplers, step, names):
    """fairseq's ``GroupedEpochBatchIterator`` keeps a multiple of ``step`` (update_freq x
    workers) batches of each kind per epoch: say what that drops, and stop when it drops a kind
    entirely."""
    for name, batches in zip(names, batch_samplers):
        kept = len(batches) // step * step
        if batches and not kept:
            raise ValueError(
                f"{name}: {len(batches)} batches per epoch, fewer than --update-freq x workers = "
                f"{step}, so every one would be dropped: use smaller batches (--max-tokens, "
                "--max-tokens-text) or a smaller --update-freq")
        if kept < len(batches):
            logger.warning(f"{name}: {len(batches) - kept} of {len(batches)} batches left out "
                           f"this epoch (a multiple of --update-freq x workers = {step} is used)")


def parse_tasks(text):
    tasks = tuple(t.strip() for t in str(text).split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"--train-tasks {text!r}: give distinct tasks from {list(TASKS)}")
    return tasks
