#!/usr/bin/env python3
"""Synthesise source-language speech for a parallel corpus with espeak-ng.

Turns a line-aligned text corpus (``PREFIX.SRC`` / ``PREFIX.TGT``) into a
speech-translation corpus in fairseq's speech-to-text layout::

    OUTDIR/wav/<id>.wav   16 kHz, mono, 16-bit PCM
    OUTDIR/<split>.tsv    id  audio  n_frames  src_text  tgt_text  src_lang  tgt_lang

``audio`` is relative to OUTDIR (``wav/<id>.wav``) so the directory can be
moved; point fairseq's ``audio_root`` (config.yaml) at OUTDIR.  ``n_frames``
is the number of 16 kHz samples.  Ids are ``<split>_<src>-<tgt>_<line>``
(line number in the corpus, from 0), so several pairs and splits can share
one OUTDIR.

espeak-ng writes 22050 Hz audio, which is resampled with torchaudio.  Two
espeak-ng processes run at once by default (``--workers``); the text reaches
espeak-ng on stdin, never through a shell.

Usage::

    synthesize_speech.py data/gettext/train.en-de en de data/st-en-de \\
        [--max-lines N] [--voice en-us] [--split train] [--workers 2]
"""

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.lines import read_aligned  # noqa: E402

TARGET_SAMPLE_RATE = 16000
MANIFEST_COLUMNS = ("id", "audio", "n_frames", "src_text", "tgt_text", "src_lang", "tgt_lang")


def read_parallel(prefix, src, tgt, max_lines):
    src_lines, tgt_lines = read_aligned(f"{prefix}.{src}", f"{prefix}.{tgt}")
    pairs = list(zip(src_lines, tgt_lines))
    return pairs if max_lines is None else pairs[:max_lines]


def run_espeak(espeak, voice, text, wav_path):
    """Synthesise text into wav_path at espeak-ng's native sample rate."""
    result = subprocess.run(
        [espeak, "-v", voice, "-b", "1", "--stdin", "-w", str(wav_path)],
        input=text.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"espeak-ng failed (voice {voice!r}): {message}")


def to_16k_mono(wav_path):
    audio, sample_rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(audio.mean(axis=1))
    if sample_rate != TARGET_SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, sample_rate, TARGET_SAMPLE_RATE)
    # Resampling can overshoot slightly; clip instead of wrapping around in int16.
    return waveform.clamp(-1.0, 1.0).numpy()


def synthesize_one(espeak, voice, text, wav_path):
    """Write one 16 kHz utterance and return its number of samples."""
    with tempfile.TemporaryDirectory(dir=wav_path.parent) as tmp:
        raw_path = Path(tmp) / "espeak.wav"
        run_espeak(espeak, voice, text, raw_path)
        samples = to_16k_mono(raw_path)
    soundfile.write(wav_path, samples, TARGET_SAMPLE_RATE, subtype="PCM_16")
    return len(samples)


def tsv_field(text):
    # fairseq reads manifests with csv.QUOTE_NONE: tabs/newlines would break rows.
    return " ".join(text.split())


def default_split(prefix):
    """'data/gettext/train.en-de' -> 'train'."""
    return Path(prefix).name.split(".")[0]


def synthesize_corpus(args):
    pairs = read_parallel(args.prefix, args.src, args.tgt, args.max_lines)
    wav_dir = args.outdir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"{args.split}_{args.src}-{args.tgt}_{i:06d}" for i in range(len(pairs))]

    # Each job mostly waits on its espeak-ng process, so threads suffice to
    # keep `workers` synthesiser processes busy; torch work is tiny.
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [
            pool.submit(synthesize_one, args.espeak, args.voice, src_text, wav_dir / f"{utt_id}.wav")
            for utt_id, (src_text, _) in zip(ids, pairs)
        ]
        n_frames = [future.result() for future in futures]

    manifest = args.outdir / f"{args.split}.tsv"
    with open(manifest, "w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for utt_id, (src_text, tgt_text), frames in zip(ids, pairs, n_frames):
            if frames == 0:  # espeak-ng said nothing (e.g. only punctuation)
                print(f"warning: empty audio for {utt_id}, left out of {manifest}", file=sys.stderr)
                continue
            row = (utt_id, f"wav/{utt_id}.wav", str(frames), tsv_field(src_text), tsv_field(tgt_text), args.src, args.tgt)
            out.write("\t".join(row) + "\n")
    return manifest, len(pairs), sum(n_frames)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", help="corpus prefix, e.g. data/gettext/train.en-de")
    parser.add_argument("src", help="source (spoken) language suffix, e.g. en")
    parser.add_argument("tgt", help="target language suffix, e.g. de")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--max-lines", type=int, default=None)
    parser.add_argument("--voice", default=None, help="espeak-ng voice (default: the source language code)")
    parser.add_argument("--split", default=None, help="manifest name (default: prefix file name up to the first dot)")
    parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes running at once")
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    args = parser.parse_args(argv)
    args.voice = args.voice or args.src
    args.split = args.split or default_split(args.prefix)
    if shutil.which(args.espeak) is None:
        parser.error(f"'{args.espeak}' not found; install it with: apt-get install espeak-ng")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny resampling jobs; avoid oversubscribing the CPU
    start = time.perf_counter()
    try:
        manifest, count, frames = synthesize_corpus(args)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    elapsed = time.perf_counter() - start
    print(
        f"{manifest}: {count} utterances, {frames / TARGET_SAMPLE_RATE:.1f} s of audio "
        f"in {elapsed:.1f} s ({count / max(elapsed, 1e-9):.1f} sentences/s, "
        f"{os.cpu_count()} CPUs, {args.workers} workers)"
    )


if __name__ == "__main__":
    main()
