"""What the benchmarks share: the command line, running and timing steps, reading fairseq logs,
scoring, and writing benchmarks/results/<method>.json and <method>.png.

A benchmark (abnet.py, xstnet.py, mrasp.py) says only what it measures and how it draws it;
everything here is method-agnostic. Measured figures go to the results JSON, never into code.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
WORK = REPO / "benchmarks/work"
BIN = Path(sys.executable).parent  # fairseq-train etc. of the interpreter running the benchmark
PLUGIN = str(REPO / "ptnmt_fairseq")
TAIL_CHARS = 4000  # of each output stream, shown when a step fails
# Offline: a BERT comes from the local HF cache or fails, it is never downloaded mid-benchmark.
# PYTHON makes the recipes use this interpreter rather than their default .venv/bin/python.
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore",
           PYTHON=sys.executable)

if str(REPO) not in sys.path:  # ptnmt_fairseq from this checkout, installed or not
    sys.path.insert(0, str(REPO))


# ---- command line and working folder -------------------------------------------------------

def parse_args(doc, method, fresh_help, flags=()):
    """The benchmarks' shared CLI: --quick, --fresh, --work, and a benchmark's own boolean
    ``flags`` ((flag, help) pairs). Adds ``mode`` ("quick" or "standard") and resolves ``work``
    (default benchmarks/work/<method>/<mode>)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, help_text in flags:
        parser.add_argument(flag, action="store_true", help=help_text)
    parser.add_argument("--quick", action="store_true",
                        help="the quick setting: less data, smaller budgets, minutes on a CPU "
                             "(measured times: README); default: the standard setting")
    parser.add_argument("--fresh", action="store_true", help=fresh_help)
    parser.add_argument("--work", type=Path, default=None,
                        help=f"working folder (default: benchmarks/work/{method}/<mode>)")
    args = parser.parse_args()
    args.mode = "quick" if args.quick else "standard"
    args.work = (args.work or WORK / method / args.mode).resolve()
    return args


def prepare_work(work, fresh, model_dirs):
    """Empty the model folders ``model_dirs`` of ``work`` (fairseq-train would resume from a
    checkpoint_last.pt left there); with ``fresh``, the whole folder (data included)."""
    if fresh and work.exists():
        shutil.rmtree(work)
    for name in model_dirs:
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)


# ---- running and timing --------------------------------------------------------------------

@dataclass
class Step:
    """A finished command: its two output streams and its wall time in seconds."""
    stdout: str
    stderr: str
    seconds: float

    @property
    def log(self):
        return self.stdout + self.stderr


def tail(text, chars=TAIL_CHARS):
    return text if len(text) <= chars else "[...]\n" + text[-chars:]


def run(cmd, env=None, name=None):
    """Run ``cmd`` (Paths and numbers allowed) with ENV plus ``env``; returns a Step. A failure
    raises RuntimeError with the exit status and the tail of stdout and stderr."""
    name = name or Path(str(cmd[0])).name
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          env=dict(ENV, **{k: str(v) for k, v in (env or {}).items()}))
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}, after {seconds:.0f} s)\n"
                           f"--- stdout, tail ---\n{tail(proc.stdout)}\n"
                           f"--- stderr, tail ---\n{tail(proc.stderr)}")
    return Step(proc.stdout, proc.stderr, seconds)


def run_recipe(recipe, work, steps, env):
    """``bash recipe work STEP`` for each step in order, printing each one's wall time;
    returns {step: Step}."""
    done = {}
    for step in steps:
        done[step] = run(["bash", recipe, work, step], env,
                         name=f"{Path(recipe).relative_to(REPO)} step {step}")
        print(f"{step}: {done[step].seconds:.0f} s", file=sys.stderr)
    return done


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), its wall time in seconds)."""
    start = time.monotonic()
    value = fn(*args, **kwargs)
    return value, time.monotonic() - start


def seconds_since(start):
    """Whole seconds since ``start``, a time.monotonic() reading."""
    return round(time.monotonic() - start)


def median(values):
    return statistics.median(list(values))


def wall_seconds(steps):
    """{name: seconds, to 0.1 s} of a {name: Step or seconds} dict."""
    return {k: round(getattr(v, "seconds", v), 1) for k, v in steps.items()}


# ---- fairseq logs --------------------------------------------------------------------------

EPOCH_FIELD = re.compile(r"\| (\w+) ([-\d.e+]+)")  # "| train_wall 36 |" in end-of-epoch lines
INNER_FIELD = re.compile(r"(\w+)=([-\d.e+]+)")  # "ups=1.23," in train_inner lines


def epoch_lines(log_text, subset="train"):
    """The end-of-epoch lines of a fairseq-train log (``| train | epoch 001 | loss 9.1 | ...``,
    or for a validation subset ``| valid on 'valid' subset | loss ...``), in log order, each as
    {field: float}."""
    marker = "| train | epoch" if subset == "train" else f"| valid on '{subset}' subset"
    return [{k: float(v) for k, v in EPOCH_FIELD.findall(line)}
            for line in log_text.splitlines() if marker in line]


def inner_lines(log_text):
    """The ``train_inner`` lines (every --log-interval updates), each as {field: float}."""
    return [{k: float(v) for k, v in INNER_FIELD.findall(line.split("train_inner", 1)[1])}
            for line in log_text.splitlines() if "train_inner" in line]


def done_training_seconds(log_text):
    """fairseq-train's own "done training in X seconds" (the last one), or None."""
    done = re.findall(r"done training in ([\d.]+) seconds", log_text)
    return float(done[-1]) if done else None


def valid_nll_curve(log_text):
    """[(updates, valid nll_loss in bits per token)] of every validation in a fairseq-train log."""
    return [(int(v["num_updates"]), v["nll_loss"]) for v in epoch_lines(log_text, "valid")
            if "nll_loss" in v]


def count_lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


# ---- scoring: ptnmt_fairseq.common.scoring, the project's one scorer -----------------------
# Always against the raw reference text, never fairseq's T- lines (rebuilt from dictionary ids:
# characters missing from the vocabulary become <<unk>>, sentencepiece's NFKC changes others).

class Score(NamedTuple):
    value: float  # BLEU or WER (percent), to 2 decimals
    sentences: int  # scored, all of the references (the scorer refuses a partial test set)


def references(path, column="tgt_text", first=None):
    """Raw reference lines of ``path`` (line i = sentence id i), or ``column`` of a speech
    manifest .tsv (XSTNet: tgt_text for ST/MT, src_text for ASR); ``first``: only that many."""
    from ptnmt_fairseq.common.scoring import read_references

    return read_references(path, column)[:first]


def bert_references(raw_path, bert, out_path, first=None):
    """The target BERT's basic tokenisation of raw references (examples/data/bert_tokenize.py
    --basic: no WordPiece, no [UNK]), the reference side of tokenised BLEU for WordPiece
    hypotheses (score_generate(..., subword="wordpiece", tokenize="none"))."""
    run([sys.executable, REPO / "examples/data/bert_tokenize.py", "--bert", bert, raw_path,
         out_path, "--basic"], name="bert_tokenize.py --basic")
    return references(out_path, first=first)


def score_generate(text, refs, metric="bleu", subword="none", detokenized=False,
                   lowercase=False, tokenize="13a"):
    """Score fairseq-generate output ``text`` against ``refs``, the raw reference lines (index =
    sentence id): H- lines after joining ``subword`` pieces, or with ``detokenized`` the D- lines;
    sacreBLEU 13a (``lowercase``: case-insensitive) or WER on normalised words."""
    from ptnmt_fairseq.common.scoring import score

    value = score(text, refs, subword=subword, metric=metric, detokenized=detokenized,
                  lowercase=lowercase, tokenize=tokenize)
    return Score(round(value, 2), len(refs))


def score_file(path, refs_path, metric="bleu", column="tgt_text"):
    """Score a saved fairseq-generate output of a sentencepiece task (XSTNet, mRASP) on its
    detokenised D- lines against the raw references in ``refs_path`` (a text file, or
    ``column`` of a speech manifest): case-sensitive sacreBLEU 13a, or WER on normalised words."""
    return score_generate(Path(path).read_text(encoding="utf-8"), references(refs_path, column),
                          metric, detokenized=True)


def detokenized_hypotheses(path, refs):
    """The D- lines of a saved fairseq-generate output in sentence-id order (one per reference
    of ``refs``; the scorer's id check applies)."""
    from ptnmt_fairseq.common.scoring import ordered_hypotheses

    return ordered_hypotheses(Path(path).read_text(encoding="utf-8"), refs, detokenized=True)


SIGNIFICANCE = "sacreBLEU paired bootstrap, 1000 resamples, seed 12345; ci95: the system's BLEU"
"""How paired_significance compares two systems, for the results JSON."""


def paired_significance(baseline, system, refs, **bleu_options):
    """sacreBLEU's paired bootstrap resampling of ``system`` against ``baseline`` (hypothesis
    lists of the references ``refs``): {delta, ci95, p, system_bleu, baseline_bleu,
    baseline_ci95, samples} (common/scoring.py ``paired_bootstrap``)."""
    from ptnmt_fairseq.common.scoring import paired_bootstrap

    return paired_bootstrap(baseline, system, refs, **bleu_options)


def scoring_description(metric="bleu", hypotheses="D- lines", lowercase=False,
                        references_name="the raw references", tokenize="13a"):
    """How a score of score_generate/score_file was computed, for the results JSON."""
    if metric == "wer":
        return (f"WER on lower-cased words without punctuation against {references_name}, "
                f"{hypotheses}")
    case = "lower-cased" if lowercase else "case-sensitive"
    return f"sacreBLEU tokenize={tokenize} against {references_name}, {case}, {hypotheses}"


# ---- results -------------------------------------------------------------------------------

def device_description():
    import torch

    return (f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def write_results(method, mode, result, paper, started):
    """Write benchmarks/results/<method>.json and print it: ``mode``, the measured ``result``,
    the paper's reference figures ``paper``, and "wall_seconds" since ``started`` (a
    time.monotonic() reading). Returns the file's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"mode": mode, **result, "paper": paper, "wall_seconds": seconds_since(started)}
    text = json.dumps(record, indent=2) + "\n"
    path = RESULTS / f"{method}.json"
    path.write_text(text)
    print(text, end="")
    return path


@contextmanager
def figure(method, panels, title, size):
    """Yield ``panels`` matplotlib axes in a row; on leaving, title the figure and save it as
    benchmarks/results/<method>.png. ``size``: (width, height) in inches."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq sets the root to DEBUG
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=size)
    yield axes
    fig.suptitle(title)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{method}.png", dpi=100)
    plt.close(fig)


def bars(ax, values, title, ylabel=None, color=None):
    """One bar per key of ``values``; ``color``: one color or one per bar."""
    ax.bar(list(values), list(values.values()), color=color)
    ax.set_title(title)
    if ylabel:
        ax.set_ylabel(ylabel)


def grouped_bars(ax, groups, series, colors=None):
    """Side-by-side bars: one group per name in ``groups``, one bar per series in each;
    ``series``: {label: [value per group]}; ``colors``: {label: color}."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar([g + offset for g in range(len(groups))], values, width, label=label,
               color=(colors or {}).get(label))
    ax.set_xticks(range(len(groups)), groups)
    ax.legend()
