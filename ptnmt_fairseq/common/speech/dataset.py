"""Speech data shared by the speech methods: manifests and <speech, transcript, translation>
triples (audio reading and checks: ``common/speech/audio.py``).

Manifests follow fairseq's speech-to-text layout (a TSV with a header; ``examples/data/
synthesize_speech.py`` writes them)::

    id  audio  n_frames  src_text  tgt_text  src_lang  tgt_lang

``audio`` is a wav/flac/ogg path, relative to the config's ``audio_root`` (default: the data
directory); ``n_frames`` is its length in samples at 16 kHz. A text-only manifest (external MT
data) has the same columns without ``audio`` and ``n_frames``.

A file that is corrupt past its header fails when read, naming the manifest line, or is dropped
from its batch with ``skip_bad_audio``.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import data_utils

from ptnmt_fairseq.common.language_tokens import lang_tag_index, shift_right
from ptnmt_fairseq.common.lines import read_lines
from ptnmt_fairseq.common.paired_sizes import PairedSizesDataset
from ptnmt_fairseq.common.speech.audio import (
    MIN_AUDIO_SAMPLES, BadAudioError, collate_waveforms, drop_bad_audio, read_audio,
)

logger = logging.getLogger(__name__)

SPEECH_COLUMNS = ("id", "audio", "n_frames", "src_text", "tgt_text", "src_lang", "tgt_lang")
TEXT_COLUMNS = ("id", "src_text", "tgt_text", "src_lang", "tgt_lang")
TASKS = ("st", "asr", "mt")
SPEECH_TASKS = ("st", "asr")
# More [UNK] than this in a split means the dictionary and the sentencepiece model disagree.
MAX_UNK_RATE = 0.05


def read_manifest(path, required: Sequence[str] = SPEECH_COLUMNS) -> List[Dict[str, str]]:
    """Rows of a TSV manifest as dicts; each row also records its ``_line`` (1-based)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    # Rows split at \n only (common/lines.py), fields at tabs (fairseq's QUOTE_NONE TSV): a \r
    # or U+2028 inside a transcript stays in it.
    reader = (line.split("\t") if line else [] for line in read_lines(path))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: empty manifest (no header line)")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}:1: header {header} lacks the columns {missing}")
    rows = []
    for line_no, fields in enumerate(reader, 2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}:{line_no}: {len(fields)} tab-separated fields, the header has "
                f"{len(header)} (a tab inside a text field?)"
            )
        row = dict(zip(header, fields), _line=line_no)
        if "n_frames" in required and not row["n_frames"].isdigit():
            raise ValueError(f"{path}:{line_no}: n_frames {row['n_frames']!r} is not a number")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the manifest has a header but no rows")
    return rows


class SpeechTextTripleDataset(PairedSizesDataset):
    """<speech, transcript, translation> triples, or <transcript, translation> pairs.

    Every item yields sub-batches for the ``tasks`` asked for, all on one dictionary:

    ========  =================================  ======================================
    task      encoder input                      decoder input / target
    ========  =================================  ======================================
    ``st``    waveform                           <lang:tgt> translation / translation
    ``asr``   waveform                           <lang:src> transcript / transcript
    ``mt``    <lang:src> transcript </s>         <lang:tgt> translation / translation
    ========  =================================  ======================================

    The language tag is the decoder's first token in place of fairseq's bos, so the tag
    selects the task's output language and is never a prediction target (XSTNet, Table 1).
    The collated sample is ``{"tasks": {task: {"net_input", "target", "ntokens"}}, ...}``;
    its top-level ``net_input``/``target`` are those of the first task, which is what
    ``fairseq-generate`` decodes. Without a speech task the audio is never read.
    """

    def __init__(self, rows, manifest, dictionary, bpe, tasks: Sequence[str],
                 audio_root: Optional[Path] = None, sample_rate: int = 16000,
                 skip_bad_audio: bool = False, shuffle: bool = True):
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
        self.tasks = tuple(tasks)
        self.manifest = str(manifest)
        self.dictionary = dictionary
        self.uses_audio = any(t in SPEECH_TASKS for t in self.tasks)
        if self.uses_audio and audio_root is None:
            raise ValueError(f"{manifest}: tasks {self.tasks} need audio, but it is a text manifest")
        self.audio_root, self.sample_rate = audio_root, sample_rate
        self.skip_bad_audio, self.shuffle = skip_bad_audio, shuffle
        if self.uses_audio:
            rows = drop_bad_audio(rows, self.manifest, audio_root, sample_rate, skip_bad_audio)
        self.rows = rows
        self.src_tokens = [self._encode(bpe, row["src_text"]) for row in rows]
        self.tgt_tokens = [self._encode(bpe, row["tgt_text"]) for row in rows]
        self._check_unknown_rate(bpe)
        self.src_tags = self._tags("src_lang")
        self.tgt_tags = self._tags("tgt_lang")
        text_sizes = np.array([len(t) + 1 for t in self.src_tokens])  # + the source tag
        self.tgt_sizes = np.array([len(t) for t in self.tgt_tokens])
        if "asr" in self.tasks:
            self.tgt_sizes = np.maximum(self.tgt_sizes, [len(t) for t in self.src_tokens])
        self.src_sizes = (
            np.array([int(r["n_frames"]) for r in rows]) if self.uses_audio else text_sizes
        )

    def _encode(self, bpe, text):
        pieces = bpe.encode(text) if bpe is not None else text
        return self.dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=True).long()

    def _check_unknown_rate(self, bpe):
        # fairseq maps every unknown piece to [UNK] silently; a mismatched pair trains on noise.
        unk = self.dictionary.unk()
        total = sum(len(t) for t in self.tgt_tokens) + sum(len(t) for t in self.src_tokens)
        unknown = sum(int(t.eq(unk).sum()) for t in self.tgt_tokens + self.src_tokens)
        if total and unknown / total > MAX_UNK_RATE:
            raise ValueError(
                f"{self.manifest}: {unknown} of {total} tokens ({100 * unknown / total:.1f}%) "
                f"are unknown to the dictionary {getattr(self.dictionary, 'source', '')}: the "
                "dictionary does not match the sentencepiece model of config.yaml "
                f"({'none configured' if bpe is None else type(bpe).__name__})"
            )

    def _tags(self, column):
        tags, seen = [], {}
        for row in self.rows:
            lang = row[column]
            if lang not in seen:
                seen[lang] = lang_tag_index(
                    self.dictionary, lang, f"{self.manifest}:{row['_line']}, {column}={lang}"
                )
            tags.append(seen[lang])
        return tags

    def __len__(self):
        return len(self.rows)

    def audio_path(self, index):
        return self.audio_root / self.rows[index]["audio"]

    def __getitem__(self, index):
        item = {"index": index, "audio": None, "bad": False}
        if self.uses_audio:
            try:
                item["audio"] = read_audio(self.audio_path(index), self.sample_rate)
                expected = int(self.rows[index]["n_frames"])
                if abs(item["audio"].numel() - expected) > 2:
                    raise BadAudioError(f"read {item['audio'].numel()} samples, the manifest says "
                                        f"n_frames={expected} (changed since it was checked?)")
            except Exception as error:
                where = (f"{self.manifest}:{self.rows[index]['_line']} "
                         f"(id {self.rows[index]['id']}): {self.audio_path(index)}")
                if not self.skip_bad_audio:
                    raise BadAudioError(f"{where}: cannot read audio: {error}") from error
                logger.warning(f"dropping {where} from its batch: {error}")
                item["bad"] = True
        return item

    def collater(self, samples):
        samples = [s for s in samples if not s["bad"]]
        if not samples:
            return {}
        pad = self.dictionary.pad()
        index = [s["index"] for s in samples]

        def pad_tokens(seqs):
            return data_utils.collate_tokens(seqs, pad, left_pad=False)

        translations = [self.tgt_tokens[i] for i in index]
        transcripts = [self.src_tokens[i] for i in index]
        sources = {}
        if self.uses_audio:
            audio, audio_lengths = collate_waveforms([s["audio"] for s in samples])
            sources["audio"] = {"src_tokens": audio, "src_lengths": audio_lengths}
        if "mt" in self.tasks:
            text = [torch.cat([t.new_tensor([self.src_tags[i]]), t])  # <lang:src> transcript </s>
                    for t, i in zip(transcripts, index)]
            sources["text"] = {"src_tokens": pad_tokens(text),
                               "src_lengths": torch.tensor([len(t) for t in text])}

        def task_batch(source, targets, tags):
            prev = [shift_right(t, tag) for t, tag in zip(targets, tags)]
            return {
                "net_input": dict(sources[source], prev_output_tokens=pad_tokens(prev)),
                "target": pad_tokens(targets),
                "ntokens": sum(len(t) for t in targets),
            }

        tgt_tags = [self.tgt_tags[i] for i in index]
        builders = {
            "st": lambda: task_batch("audio", translations, tgt_tags),
            "asr": lambda: task_batch("audio", transcripts, [self.src_tags[i] for i in index]),
            "mt": lambda: task_batch("text", translations, tgt_tags),
        }
        tasks = {task: builders[task]() for task in self.tasks}
        first = tasks[self.tasks[0]]
        return {
            "id": torch.tensor(index),
            "nsentences": len(samples),
            "ntokens": first["ntokens"],
            "net_input": first["net_input"],
            "target": first["target"],
            "tasks": tasks,
            "audio_seconds": (float(sources["audio"]["src_lengths"].sum()) / self.sample_rate
                              if self.uses_audio else 0.0),
        }

    def num_tokens(self, index):  # speech batches are sized in audio samples
        return int(self.src_sizes[index]) if self.uses_audio else super().num_tokens(index)

    def num_tokens_vec(self, indices):
        return self.src_sizes[indices] if self.uses_audio else super().num_tokens_vec(indices)

    def filter_indices_by_size(self, indices, max_sizes):
        indices, ignored = super().filter_indices_by_size(indices, max_sizes)
        if self.uses_audio:
            short = self.src_sizes[indices] < MIN_AUDIO_SAMPLES
            if short.any():
                logger.warning(f"{self.manifest}: {int(short.sum())} clips shorter than "
                               f"{MIN_AUDIO_SAMPLES} samples are skipped")
                ignored = list(ignored) + indices[short].tolist()
                indices = indices[~short]
        return indices, ignored


def load_split(manifest, dictionary, bpe, tasks, audio_root=None, **kwargs):
    """A ``SpeechTextTripleDataset`` from a speech (or, for text-only tasks, text) manifest."""
    uses_audio = any(t in SPEECH_TASKS for t in tasks)
    rows = read_manifest(manifest, SPEECH_COLUMNS if uses_audio else TEXT_COLUMNS)
    return SpeechTextTripleDataset(rows, manifest, dictionary, bpe, tasks,
                                   audio_root=audio_root if uses_audio else None, **kwargs)
