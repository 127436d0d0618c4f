"""Audio files for the speech methods: reading, resampling and checks before training.

Bad audio is found before training starts, never mid-epoch: every manifest row's header is read
(soundfile) when a split is loaded, and a missing, unreadable, empty or zero-length file, or one
whose length at its sample rate contradicts ``n_frames`` (a wrong sample rate or a stale
manifest), is an error naming the manifest line, the row id and the file. With
``skip_bad_audio`` such rows are dropped instead and their number is logged.
"""
import logging
from collections import Counter
from pathlib import Path
from typing import List, Optional

import soundfile
import torch
import torchaudio

logger = logging.getLogger(__name__)

# Shorter clips give wav2vec 2.0 (25 ms window, 20 ms hop) too few frames to shrink (ConST: 1k).
MIN_AUDIO_SAMPLES = 1000


class BadAudioError(ValueError):
    """An audio file that cannot be trained on; the message names the manifest line and file."""


def audio_problem(path: Path, n_frames: int, sample_rate: int = 16000) -> Optional[str]:
    """What is wrong with an audio file, judged from its header, or None."""
    if not path.is_file():
        return "file does not exist"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        return f"unreadable audio ({error})"
    if info.frames <= 0:
        return "zero-length audio (0 samples)"
    expected = round(info.frames * sample_rate / info.samplerate)
    if abs(expected - n_frames) > 2 and info.samplerate == sample_rate:
        return (f"{info.frames} samples, but the manifest says n_frames={n_frames}: a truncated "
                "file or a stale manifest")
    if abs(expected - n_frames) > 2:  # resampling rounds by a sample or two
        return (
            f"{info.frames} samples at {info.samplerate} Hz are {expected} samples at "
            f"{sample_rate} Hz, but the manifest says n_frames={n_frames}: wrong sample rate "
            "or a stale manifest"
        )
    return None


def read_audio(path, sample_rate: int = 16000) -> torch.Tensor:
    """Mono float waveform in [-1, 1] at ``sample_rate``; other rates are resampled."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise BadAudioError("zero-length audio")
    waveform = torch.from_numpy(data).mean(dim=1)  # multi-channel files are downmixed
    if rate != sample_rate:
        waveform = torchaudio.functional.resample(waveform, rate, sample_rate)
    if not torch.isfinite(waveform).all():
        raise BadAudioError("audio contains NaN or infinite samples")
    return waveform


def resolve_audio_root(data_dir, audio_root: str) -> Path:
    """The absolute folder that manifest audio paths are relative to: ``audio_root`` of
    config.yaml (absolute, or relative to ``data_dir``), else ``data_dir`` itself. Resolved once,
    so a relative ``data_dir`` is never joined to itself."""
    data_dir = Path(data_dir).resolve()
    return data_dir / audio_root if audio_root else data_dir


def drop_bad_audio(rows, manifest, audio_root: Path, sample_rate: int, skip: bool):
    """Rows whose audio passes ``audio_problem``; the first failure is an error unless ``skip``."""
    kept, bad = [], Counter()
    for row in rows:
        problem = audio_problem(audio_root / row["audio"], int(row["n_frames"]), sample_rate)
        if problem is None:
            kept.append(row)
            continue
        where = f"{manifest}:{row['_line']} (id {row['id']}): {audio_root / row['audio']}"
        if not skip:
            raise BadAudioError(
                f"{where}: {problem}. Fix the row, or pass --skip-bad-audio to drop bad rows."
            )
        logger.warning(f"skipping {where}: {problem}")
        bad[problem.split(" (")[0].split(":")[0]] += 1
    if bad:
        logger.warning(
            f"{manifest}: skipped {sum(bad.values())} of {len(rows)} rows with bad audio "
            f"({dict(bad)})"
        )
    if not kept:
        raise BadAudioError(f"{manifest}: every row has bad audio")
    return kept


def collate_waveforms(waveforms: List[torch.Tensor]):
    lengths = torch.tensor([w.numel() for w in waveforms], dtype=torch.long)
    batch = waveforms[0].new_zeros(len(waveforms), int(lengths.max()))
    for i, w in enumerate(waveforms):
        batch[i, : w.numel()] = w
    return batch, lengths
