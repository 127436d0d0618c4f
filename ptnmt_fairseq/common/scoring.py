"""Score ``fairseq-generate`` output with sacrebleu (BLEU) or WER, after undoing subwords.

Usage: python -m ptnmt_fairseq.common.scoring GENERATE_OUTPUT [--subword wordpiece|sentencepiece|none]
       [--metric bleu|wer] [--detokenized]

Reads the ``H-<id>`` and ``T-<id>`` lines, orders them by id, and refuses to score when a
hypothesis or reference is missing (a silently partial test set would inflate or deflate BLEU).

``--detokenized`` is for tasks whose fairseq-generate output is detokenised text (a
sentencepiece ``build_bpe``: XSTNet, mRASP): it scores the ``D-`` lines, BLEU with sacreBLEU's
own 13a tokenisation (case-sensitive detokenised sacreBLEU), WER on lower-cased words without
punctuation.
"""
import argparse
import re
import sys

from ptnmt_fairseq.common.lines import split_lines


def join_subwords(text: str, subword: str) -> str:
    if subword == "wordpiece":  # BERT: "play ##ing" -> "playing"
        return re.sub(r" ##", "", text).strip()
    if subword == "sentencepiece":
        return text.replace(" ", "").replace("\u2581", " ").strip()
    return text.strip()


def read_generate_output(text: str, hypothesis: str = "H"):
    """Return (hypotheses, references) as id-ordered lists from fairseq-generate stdout;
    ``hypothesis`` "D" reads the detokenised ``D-`` lines instead of ``H-``."""
    hyps, refs = {}, {}
    for line in split_lines(text):  # a U+2028 inside a hypothesis must not end its line
        if line.startswith(f"{hypothesis}-"):
            sid, _score, *rest = line.split("\t")
            hyps[int(sid[2:])] = rest[0] if rest else ""
        elif line.startswith("T-"):
            sid, *rest = line.split("\t")
            refs[int(sid[2:])] = rest[0] if rest else ""
    missing = sorted(set(refs) ^ set(hyps))
    if missing:
        raise ValueError(f"ids {missing[:10]} have a reference or a hypothesis but not both")
    ids = sorted(refs)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def wer_words(text: str, normalise: bool = False):
    """Words for WER; ``normalise``: lower-cased, punctuation (but apostrophes) removed."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split() if normalise else text.split()


def word_error_rate(hyps, refs, normalise: bool = False) -> float:
    """Corpus WER in percent: word-level edit distance summed over sentences / reference words."""
    errors = words = 0
    for hyp, ref in zip(hyps, refs):
        h, r = wer_words(hyp, normalise), wer_words(ref, normalise)
        row = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            prev, row[0] = row[0], i
            for j, hw in enumerate(h, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
        errors += row[len(h)]
        words += len(r)
    return 100.0 * errors / max(words, 1)


def score(text: str, subword: str = "none", metric: str = "bleu",
          detokenized: bool = False) -> float:
    import sacrebleu

    hyps, refs = read_generate_output(text, "D" if detokenized else "H")
    if not refs:
        raise ValueError("no T-/H- lines found: was this fairseq-generate output?")
    hyps = [join_subwords(h, subword) for h in hyps]
    refs = [join_subwords(r, subword) for r in refs]
    if metric == "wer":
        return word_error_rate(hyps, refs, normalise=detokenized)
    if detokenized:
        return sacrebleu.corpus_bleu(hyps, [refs]).score
    # The text is already tokenised (WordPiece basic tokenisation / moses-like), so no
    # second tokenisation: this is "tokenized BLEU" as in the AB-Net and MASS papers.
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generate_output")
    parser.add_argument("--subword", default="none", choices=["none", "wordpiece", "sentencepiece"])
    parser.add_argument("--metric", default="bleu", choices=["bleu", "wer"])
    parser.add_argument("--detokenized", action="store_true",
                        help="score the D- lines: 13a-tokenised sacreBLEU, normalised WER")
    args = parser.parse_args(argv)
    with open(args.generate_output, encoding="utf-8") as f:
        text = f.read()
    print(f"{args.metric.upper()} = {score(text, args.subword, args.metric, args.detokenized):.2f}")


if __name__ == "__main__":
    sys.exit(main())
