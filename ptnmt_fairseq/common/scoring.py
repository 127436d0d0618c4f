"""Score ``fairseq-generate`` output against the raw reference text: sacreBLEU or WER.

Usage: python -m ptnmt_fairseq.common.scoring GENERATE_OUTPUT --references RAW
       [--reference-column tgt_text] [--subword wordpiece|sentencepiece|none] [--detokenized]
       [--metric bleu|wer] [--lowercase] [--paired-bs BASELINE_OUTPUT]

References are always the raw text (a plain file, line i = sentence id i, or a column of a
speech manifest ``.tsv``), never fairseq's ``T-`` lines: those are rebuilt from dictionary ids,
so a character missing from the vocabulary becomes ``<<unk>>`` and sentencepiece's NFKC
normalisation changes others (on a 9-sentence test set, 3 such characters turned BLEU 45.00
into 25.82). Hypotheses are the ``D-`` lines (``--detokenized``: tasks with a sentencepiece
``build_bpe``) or the ``H-`` lines with ``--subword`` pieces joined (BERT WordPiece ``##``).
BLEU is sacreBLEU with its own 13a tokenisation, or ``--tokenize none`` on references already
tokenised as the hypotheses are (WordPiece systems: the target BERT's basic tokenisation of the
raw references, ``examples/data/bert_tokenize.py --basic``; joined ``##`` pieces never match
the raw text's punctuation and accents otherwise), ``--lowercase`` for case-insensitive BLEU; WER
is on lower-cased words without punctuation. The printed line names all of it. ``--paired-bs``
compares with a baseline's output by sacreBLEU's paired bootstrap resampling. A generate output that does
not cover every reference is refused (a silently partial test set would move the score).
"""
import argparse
import json
import logging
import re
import sys

from ptnmt_fairseq.common.lines import read_lines, split_lines

logger = logging.getLogger(__name__)


def join_subwords(text: str, subword: str) -> str:
    if subword == "wordpiece":  # BERT: "play ##ing" -> "playing"
        return re.sub(r" ##", "", text).strip()
    if subword == "sentencepiece":
        return text.replace(" ", "").replace("\u2581", " ").strip()
    return text.strip()


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


def read_references(path, column: str = "tgt_text"):
    """Raw reference lines of ``path``: a text file (line i = sentence id i), or ``column`` of a
    TSV manifest with a header (XSTNet: ``tgt_text`` for ST/MT, ``src_text`` for ASR)."""
    lines = read_lines(path)
    if not str(path).endswith(".tsv"):
        return lines
    header = lines[0].split("\t")
    if column not in header:
        raise ValueError(f"{path}: no column {column!r} in the header {header}")
    at = header.index(column)
    return [row.split("\t")[at] for row in lines[1:] if row]


def hypotheses_by_id(text: str, hypothesis: str = "H"):
    """{id: hypothesis} from fairseq-generate output (``hypothesis``: "H" or "D" lines)."""
    hyps = {}
    for line in split_lines(text):
        if line.startswith(f"{hypothesis}-"):
            sid, _score, *rest = line.split("\t")
            hyps[int(sid[2:])] = rest[0] if rest else ""
    return hyps


def ordered_hypotheses(text: str, references, subword: str = "none",
                       detokenized: bool = False):
    """The hypotheses of fairseq-generate ``text`` in sentence-id order, subwords joined (the
    ``D-`` lines with ``detokenized``). ValueError when the ids do not match the ``references``
    (a list, index = sentence id) one for one."""
    found = hypotheses_by_id(text, "D" if detokenized else "H")
    if sorted(found) != list(range(len(references))):
        missing = sorted(set(range(len(references))) - set(found))
        extra = sorted(set(found) - set(range(len(references))))
        raise ValueError(f"the generate output has {len(found)} hypotheses for "
                         f"{len(references)} references (missing ids {missing[:10]}, unknown ids "
                         f"{extra[:10]}): score the whole split against its own references")
    return [join_subwords(found[i], subword) for i in range(len(references))]


def bleu_metric(lowercase: bool = False, tokenize: str = "13a"):
    """sacreBLEU's corpus BLEU; ``tokenize="none"`` for references tokenised like the
    hypotheses (no warning about it)."""
    from sacrebleu.metrics import BLEU

    return BLEU(lowercase=lowercase, tokenize=tokenize, force=tokenize == "none")


def score(text: str, references, subword: str = "none", metric: str = "bleu",
          detokenized: bool = False, lowercase: bool = False, tokenize: str = "13a") -> float:
    """BLEU or WER of fairseq-generate ``text`` against the raw ``references`` (a list, index =
    sentence id). ValueError when the ids do not match the references one for one."""
    hyps = ordered_hypotheses(text, references, subword, detokenized)
    if metric == "wer":
        return word_error_rate(hyps, references, normalise=True)
    return bleu_metric(lowercase, tokenize).corpus_score(hyps, [list(references)]).score


def paired_bootstrap(baseline_hypotheses, system_hypotheses, references, lowercase: bool = False,
                     tokenize: str = "13a", samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling (``sacrebleu --paired-bs``; Koehn, EMNLP 2004) of
    a system's BLEU against a baseline's: two hypothesis lists of the same ``references``
    (index = sentence; several test sets may be concatenated, in the same order for both).

    Returns ``{"delta", "ci95", "p", "system_bleu", "baseline_bleu", "baseline_ci95",
    "samples"}``: ``delta`` = system BLEU - baseline BLEU; ``ci95`` = [low, high] of the
    system's BLEU over the bootstrap resamples (sacreBLEU's mean +- 95% half-width; sacreBLEU
    gives no interval for the difference itself), ``baseline_ci95`` the baseline's; ``p`` the
    p-value of "the difference is due to chance" (sacreBLEU's, seeded by SACREBLEU_SEED, default
    12345, so it is reproducible).
    """
    from sacrebleu.significance import PairedTest

    if not len(baseline_hypotheses) == len(system_hypotheses) == len(references):
        raise ValueError(f"{len(baseline_hypotheses)} baseline and {len(system_hypotheses)} "
                         f"system hypotheses for {len(references)} references")
    named = [("baseline", list(baseline_hypotheses)), ("system", list(system_hypotheses))]
    test = PairedTest(named, {"BLEU": bleu_metric(lowercase, tokenize)}, [list(references)],
                      test_type="bs", n_samples=samples)
    _signatures, results = test()
    baseline, system = next(v for k, v in results.items() if k != "System")
    # sacreBLEU counts resampled differences *above* the observed one, so with no observed
    # difference (identical outputs, or two systems at BLEU 0 on every resample) every count is 0
    # and it returns its smallest p-value, 1/(samples+1): no difference is p = 1.
    p = 1.0 if system.score == baseline.score else float(system.p_value)
    interval = lambda r: [round(float(r.mean - r.ci), 2), round(float(r.mean + r.ci), 2)]  # noqa: E731
    return {"delta": round(system.score - baseline.score, 2), "ci95": interval(system),
            "p": round(p, 4), "system_bleu": round(system.score, 2),
            "baseline_bleu": round(baseline.score, 2), "baseline_ci95": interval(baseline),
            "samples": samples}


def describe(metric: str, lowercase: bool, references: str, n: int, tokenize: str = "13a",
             column: str = "") -> str:
    source = f"{references}{' column ' + column if references.endswith('.tsv') else ''}"
    if metric == "wer":
        return f"WER on lower-cased words without punctuation, {n} sentences of {source}"
    case = "lower-cased" if lowercase else "case-sensitive"
    kind = "pre-tokenised" if tokenize == "none" else "raw"
    return f"sacreBLEU tokenize={tokenize}, {case}, {n} sentences, {kind} references {source}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generate_output")
    parser.add_argument("--references", required=True,
                        help="raw reference text (line i = id i) or a speech manifest .tsv")
    parser.add_argument("--reference-column", default="tgt_text",
                        help="the manifest column holding the references (ASR: src_text)")
    parser.add_argument("--subword", default="none", choices=["none", "wordpiece", "sentencepiece"])
    parser.add_argument("--metric", default="bleu", choices=["bleu", "wer"])
    parser.add_argument("--detokenized", action="store_true", help="score the D- lines")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU")
    parser.add_argument("--tokenize", default="13a",
                        help="sacreBLEU tokenisation (none: references tokenised like the "
                             "hypotheses, e.g. bert_tokenize.py --basic)")
    parser.add_argument("--paired-bs", metavar="BASELINE_OUTPUT",
                        help="also compare with this baseline's fairseq-generate output of the "
                             "same test set: sacreBLEU's paired bootstrap resampling (delta, "
                             "95%% confidence intervals, p-value), printed as JSON")
    args = parser.parse_args(argv)
    with open(args.generate_output, encoding="utf-8") as f:
        text = f.read()
    references = read_references(args.references, args.reference_column)
    value = score(text, references, args.subword, args.metric, args.detokenized, args.lowercase,
                  args.tokenize)
    how = describe(args.metric, args.lowercase, args.references, len(references), args.tokenize,
                   args.reference_column)
    print(f"{args.metric.upper()} = {value:.2f} ({how})")
    if args.paired_bs:
        if args.metric != "bleu":
            parser.error("--paired-bs compares BLEU only")
        with open(args.paired_bs, encoding="utf-8") as f:
            baseline = f.read()
        hyps = [ordered_hypotheses(t, references, args.subword, args.detokenized)
                for t in (baseline, text)]
        print(json.dumps(paired_bootstrap(*hyps, references, args.lowercase, args.tokenize)))


def warn_damaged_references(sample, dictionary, where: str):
    """Log once when references of a generation batch hold [UNK]: fairseq-generate's own
    --scoring then compares against damaged references."""
    target = sample.get("target")
    if target is None or getattr(warn_damaged_references, "warned", False):
        return
    unknown = int(target.eq(dictionary.unk()).any(dim=1).sum())
    if unknown:
        logger.warning(
            f"{where}: {unknown} references in this batch contain {dictionary.unk_word}: the "
            "score fairseq-generate prints compares against references rebuilt from ids. Score "
            "against the raw text: python -m ptnmt_fairseq.common.scoring OUTPUT --references RAW")
        warn_damaged_references.warned = True


if __name__ == "__main__":
    sys.exit(main())
