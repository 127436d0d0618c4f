#!/usr/bin/env python3
"""Joint vocabulary, config.yaml and external MT data for a speech-translation directory.

Run after ``synthesize_speech.sh``. Writes into SPEECH_DIR:

* ``spm.model``/``spm.vocab``: one sentencepiece unigram model over transcripts and translations
  (and the external MT text), as XSTNet/ConST share one vocabulary (ConST: 10k; default here 1000,
  CPU-sized);
* ``dict.txt``: the fairseq dictionary of those pieces, plus ``<lang:xx>`` for every language
  and ``<audio>`` (the tags of ``ptnmt_fairseq/common/language_tokens.py``);
* ``config.yaml``: fairseq speech-to-text data config (raw 16 kHz audio, no standardisation,
  audio paths relative to SPEECH_DIR);
* ``train_mt.tsv`` (with ``--external-mt``): text pairs of a parallel corpus whose source is not
  among the speech training transcripts, as D_MT-ext, in ``id src_text tgt_text src_lang
  tgt_lang`` columns.

Usage::

    prepare_speech_vocab.py SPEECH_DIR [--vocab-size 1000]
        [--external-mt data/gettext/train.en-fr --src en --tgt fr]
"""
import argparse
import csv
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.lines import read_aligned  # noqa: E402

SPECIAL_PIECES = 4  # <s> <pad> </s> <unk>: fairseq's Dictionary adds its own


def read_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def clean(text):
    return " ".join(text.replace("\t", " ").split())


def external_pairs(prefix, src, tgt, exclude):
    try:
        src_lines, tgt_lines = read_aligned(f"{prefix}.{src}", f"{prefix}.{tgt}")
    except ValueError as error:
        sys.exit(f"error: {error}")
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines)):
        s, t = clean(s), clean(t)
        if s and t and s not in exclude:
            yield (f"mt_{src}-{tgt}_{i}", s, t, src, tgt)


def train_sentencepiece(texts, model_prefix, vocab_size):
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as f:
        f.write("\n".join(texts) + "\n")
        f.flush()
        spm.SentencePieceTrainer.train(
            input=f.name, model_prefix=str(model_prefix), vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, input_sentence_size=1000000,
            shuffle_input_sentence=True, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
            hard_vocab_limit=False, minloglevel=2,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speech_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--external-mt", metavar="PREFIX",
                        help="parallel corpus PREFIX.SRC / PREFIX.TGT used as D_MT-ext")
    parser.add_argument("--src", help="source language of --external-mt")
    parser.add_argument("--tgt", help="target language of --external-mt")
    args = parser.parse_args(argv)

    train = read_rows(args.speech_dir / "train.tsv")
    langs = set()
    for split in ("train", "valid", "test"):
        path = args.speech_dir / f"{split}.tsv"
        if path.is_file():
            langs |= {lang for row in read_rows(path) for lang in (row["src_lang"], row["tgt_lang"])}
    texts = [row["src_text"] for row in train] + [row["tgt_text"] for row in train]

    if args.external_mt:
        if not (args.src and args.tgt):
            parser.error("--external-mt needs --src and --tgt")
        pairs = list(external_pairs(args.external_mt, args.src, args.tgt,
                                    {row["src_text"] for row in train}))
        with open(args.speech_dir / "train_mt.tsv", "w", encoding="utf-8") as out:
            out.write("id\tsrc_text\ttgt_text\tsrc_lang\ttgt_lang\n")
            out.writelines("\t".join(p) + "\n" for p in pairs)
        texts += [p[1] for p in pairs] + [p[2] for p in pairs]
        langs |= {args.src, args.tgt}
        print(f"train_mt.tsv: {len(pairs)} external MT pairs")

    train_sentencepiece(texts, args.speech_dir / "spm", args.vocab_size)
    pieces = (args.speech_dir / "spm.vocab").read_text(encoding="utf-8").splitlines()
    with open(args.speech_dir / "dict.txt", "w", encoding="utf-8") as out:
        for line in pieces[SPECIAL_PIECES:]:
            out.write(f"{line.split(chr(9))[0]} 1\n")
        for lang in sorted(langs):
            out.write(f"<lang:{lang}> 1\n")
        out.write("<audio> 1\n")
    (args.speech_dir / "config.yaml").write_text(
        "# fairseq speech-to-text data config (written by examples/data/prepare_speech_vocab.py)\n"
        "vocab_filename: dict.txt\n"
        "bpe_tokenizer:\n  bpe: sentencepiece\n  sentencepiece_model: spm.model\n"
        "use_audio_input: true\nstandardize_audio: false\nuse_sample_rate: 16000\n"
        "audio_root: ''\n",
        encoding="utf-8",
    )
    print(f"dict.txt: {len(pieces) - SPECIAL_PIECES} pieces + tags for {sorted(langs)} + <audio>")


if __name__ == "__main__":
    main()
