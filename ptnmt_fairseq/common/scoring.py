"""Score ``fairseq-generate`` output with sacrebleu (BLEU) or WER, after undoing subwords.

Usage: python -m ptnmt_fairseq.common.scoring GENERATE_OUTPUT [--subword wordpiece|sentencepiece|none]
       [--metric bleu|wer]

Reads the ``H-<id>`` and ``T-<id>`` lines, orders them by id, and refuses to score when a
hypothesis or reference is missing (a silently partial test set would inflate or deflate BLEU).
"""
import argparse
import re
import sys


def join_subwords(text: str, subword: str) -> str:
    if subword == "wordpiece":  # BERT: "play ##ing" -> "playing"
        return re.sub(r" ##", "", text).strip()
    if subword == "sentencepiece":
        return text.replace(" ", "").replace("\u2581", " ").strip()
    return text.strip()


def read_generate_output(text: str):
    """Return (hypotheses, references) as id-ordered lists from fairseq-generate stdout."""
    hyps, refs = {}, {}
    for line in text.splitlines():
        if line.startswith("H-"):
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


def word_error_rate(hyps, refs) -> float:
    """Corpus WER in percent: word-level edit distance summed over sentences / reference words."""
    errors = words = 0
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        row = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            prev, row[0] = row[0], i
            for j, hw in enumerate(h, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
        errors += row[len(h)]
        words += len(r)
    return 100.0 * errors / max(words, 1)


def score(text: str, subword: str = "none", metric: str = "bleu") -> float:
    import sacrebleu

    hyps, refs = read_generate_output(text)
    if not refs:
        raise ValueError("no T-/H- lines found: was this fairseq-generate output?")
    hyps = [join_subwords(h, subword) for h in hyps]
    refs = [join_subwords(r, subword) for r in refs]
    if metric == "wer":
        return word_error_rate(hyps, refs)
    # The text is already tokenised (WordPiece basic tokenisation / moses-like), so no
    # second tokenisation: this is "tokenized BLEU" as in the AB-Net and MASS papers.
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generate_output")
    parser.add_argument("--subword", default="none", choices=["none", "wordpiece", "sentencepiece"])
    parser.add_argument("--metric", default="bleu", choices=["bleu", "wer"])
    args = parser.parse_args(argv)
    with open(args.generate_output, encoding="utf-8") as f:
        value = score(f.read(), args.subword, args.metric)
    print(f"{args.metric.upper()} = {value:.2f}")


if __name__ == "__main__":
    sys.exit(main())
