#!/usr/bin/env python3
"""AB-Net benchmark on the gettext de-en corpus (CPU): AB-Net against Mask-Predict and AR Transformers.

In one run, with the same data and the same wall-clock training budget per system
(``--stop-time-hours``; the updates reached are reported), through recipes/abnet/run.sh:

* ``transformer``: fairseq's AR Transformer (3+3 layers, d256), beam 5, on the real targets. It
  is the main supervised baseline, and the teacher of sequence-level distillation (Sec. 4.1,
  AB-Net: the non-autoregressive systems train on its greedy translations of the training set).
* ``abnet_enc``: AB-Net-Enc, the source BERT with adapters and a Transformer decoder, AR
  (Table 3a), on the real targets.
* ``cmlm``: fairseq's cmlm_transformer (Mask-Predict), distilled.
* ``abnet_minilm``: AB-Net with the packaged all-MiniLM-L6-v2 on both sides, distilled.
* ``abnet_mlm_bert``: AB-Net with small BERTs pre-trained here with an MLM head on the training
  text of each side (examples/data/pretrain_bert.sh; kept between runs), on the same distilled
  targets re-tokenised for them.

Measured:
1. BLEU on the test split (standard: all of it): sacreBLEU tokenize=none of the WordPiece-joined
   H- lines against the raw English references (the recipe's pair/test.de-en.en, never fairseq's
   T- lines) in all-MiniLM-L6-v2's basic tokenisation (lower-cased, accents stripped), the same
   references for every system; sacreBLEU's paired bootstrap for each of the paper's comparisons.
2. Latency (ms per sentence at batch size 1) and throughput (sentences per second at batch size
   32) on the same first test sentences, as fairseq-generate reports its decoding time. Beside
   them, ``transformer_bert_size``: an AR Transformer with the BERTs' depth and width (6+6 layers,
   d384, as all-MiniLM-L6-v2), so that latency compares like with like. It is not trained: an AR
   decoder's time depends on its shape and on how many tokens it emits, not on its weights, so a
   randomly initialised one is made to emit, sentence by sentence, as many tokens as the trained
   ``transformer`` did (in-process SequenceGenerator, beam 5, min_len = max_len = that count),
   and ``transformer`` is timed the same way beside it.
3. Where AB-Net's decoding time goes: torch.profiler over AB-Net (MiniLM) decoding at batch size
   1, by module (source BERT, decoder BERT layers, cross-attention adapters, MLM head), with the
   decoder passes and the canvas tokens they cover.
4. The length predictor: its top-1 canvas length against the reference length (mean absolute
   error in WordPiece tokens, [CLS]/[SEP] included) on the BLEU sentences.
5. Training step time and peak memory of AB-Net frozen vs AB-Net FB (BERTs fine-tuned).

Writes benchmarks/results/abnet.json and benchmarks/results/abnet.png; works in
benchmarks/work/abnet/{quick,standard} (the corpus, binarised data and pre-trained BERTs are kept
between runs, every translation model is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/abnet.py [--quick] [--fresh] [--work DIR]
"""
import os
import re
import time
from argparse import Namespace
from typing import NamedTuple

import harness
from harness import BIN, PLUGIN, REPO

SRC, TGT = "de", "en"  # the recipe's default direction
MINILM = "all-MiniLM-L6-v2"
RECIPE = REPO / "recipes/abnet/run.sh"
MASK_PREDICT = ["--iter-decode-max-iter", "9", "--iter-decode-with-beam", "4"]  # T=10, B=4
# The AR hypotheses (and the distillation teacher's) and AB-Net's Mask-Predict canvases are
# bounded by 1.2 |x| + 10 tokens: an undertrained model that loops (AR) or proposes long canvases
# (length predictor) would otherwise decode to fairseq's 200 and spend the budget there. fairseq's
# translation_lev ignores --max-len-a/-b, so cmlm's canvases are bounded by its length classes only.
MAX_LEN_A, MAX_LEN_B = 1.2, 10
MAX_LEN = ["--max-len-a", str(MAX_LEN_A), "--max-len-b", str(MAX_LEN_B)]
# The teacher's decoding of the training set for distillation: greedy (beam 5 over the 23.7k
# sources would take half the standard budget; greedy took under 2 minutes).
DISTILL_BEAM = 1
DECODE = {  # the decoding of recipes/abnet/run.sh (generate_args), plus MAX_LEN
    "abnet": ["--task", "translation_abnet", *MASK_PREDICT, *MAX_LEN],
    "cmlm": ["--task", "translation_lev", *MASK_PREDICT, *MAX_LEN],
    "abnet_enc": ["--task", "translation_bert", "--beam", "5", *MAX_LEN],
    "transformer": ["--task", "translation", "--beam", "5", *MAX_LEN],
}
MINILM_SYSTEMS = ["transformer", "abnet_enc", "cmlm", "abnet"]
# The BLEU decoding's batch size: fairseq's cmlm pads a batch to its longest canvas (its length
# classes reach 255 and translation_lev ignores MAX_LEN), so batches of 32 decoded 3.7x slower
# than batches of 8 (64 sentences: 32.8 s against 8.9 s).
BLEU_BATCH = 8
SETTINGS = {  # budget_s: training seconds per system; max_train None = all pairs; *_lines None =
              # the whole test split
    "quick": {"budget_s": 30, "max_train": 6000, "bleu_lines": 60, "latency_lines": 8,
              "profile_lines": 4, "bert_minutes": 0.3, "probe_updates": 6,
              "train_extra": ""},
    # 5 systems x 350 s in bfloat16 (compat 15; AB-Net 1.8x the updates of fp32 here), the
    # teacher's greedy pass over the 23.7k training sources (2 minutes), decoding and the probes,
    # sized for 45 minutes; the BERT pre-training (2 x 2 minutes) is kept between runs. The AR
    # Transformer alone, with MAX_LEN: 0.6 / 8.9 / 12.6 / 22.9 BLEU after 250 / 500 / 750 / 1000
    # updates (1.6 per second). Measured runs: 300 s per system (and a trained
    # transformer_bert_size): 8.53 BLEU after 486 updates, 53.6 minutes; 390 s: 13.52 after 641
    # updates, 46.3 minutes.
    "standard": {"budget_s": 350, "max_train": None, "bleu_lines": None, "latency_lines": 64,
                 "profile_lines": 16, "bert_minutes": 2, "probe_updates": 8,
                 "train_extra": "--bf16"},
}
# The fairseq Transformers' optimisation (both sizes): pre-norm at lr 2e-3, which the mRASP
# calibration found to learn fastest in minutes on this CPU (README). The other systems keep the
# recipe's settings (post-norm; AB-Net 5e-4 as the paper, AB-Net-Enc and cmlm 1e-3).
AR_EXTRA = "--lr 2e-3 --encoder-normalize-before --decoder-normalize-before"
COMPARISONS = {  # name: (baseline, system), the paper's direction: system better
    "abnet_minilm_vs_cmlm": ("cmlm", "abnet_minilm"),  # Table 1
    "abnet_minilm_vs_transformer": ("transformer", "abnet_minilm"),  # Table 1
    "abnet_mlm_bert_vs_abnet_minilm": ("abnet_minilm", "abnet_mlm_bert"),  # an MLM-trained BERT
    "abnet_enc_vs_transformer": ("transformer", "abnet_enc"),  # Table 3a
}
PAPER = {  # Guo et al. 2020, Table 1 (WMT14 En-De, newstest2014, GPU; IWSLT14 De-En), Sec. 4.4
    "latency_ms": {"transformer": 778, "cmlm": 161, "abnet": 327},
    "ar_over_maskpredict_latency": 778 / 327,
    "ar_over_cmlm_latency": 778 / 161,
    "bleu_wmt14_en_de": {"transformer_base": 28.04, "mask_predict": 27.03, "abnet": 28.69},
    "bleu_iwslt14_de_en": {"transformer_base": 33.59, "abnet_enc": 34.45, "abnet": 36.49},
    "frozen_memory_saving": 0.29, "frozen_time_saving": 0.26,
}


class System(NamedTuple):
    work: object  # the recipe's WORKDIR
    model: str  # the recipe's SYSTEM (its model folder)

    @property
    def kind(self):
        return "fairseq" if self.model in ("cmlm", "transformer") else "bert"

    def data(self, subset):
        return self.work / f"{self.kind}-{subset}"


def run_recipe(work, systems, s, **env):
    """recipes/abnet/run.sh WORK SYSTEMS..., training only, ``s["budget_s"]`` seconds per system
    (and ``s["train_extra"]``)."""
    env = dict({"MAX_TRAIN": s["max_train"] or "", "MAX_UPDATE": 1000000, "SKIP_GENERATE": 1,
                "AR_EXTRA": AR_EXTRA,
                "TRAIN_EXTRA": f"--stop-time-hours {s['budget_s'] / 3600:.5f} {s['train_extra']}"},
               **env)
    return harness.run(["bash", RECIPE, work, *systems], env, name=f"recipe {' '.join(systems)}")


def pretrain_berts(work, minutes):
    """MLM-pretrained BERTs of each side (uncased, as the references), kept between runs:
    {lang: folder}."""
    out = work.parent / "mlm_berts"
    missing = [lang for lang in (SRC, TGT) if not (out / lang / "config.json").exists()]
    if missing:
        harness.run(["bash", REPO / "examples/data/pretrain_bert.sh", work / "raw", out, *missing],
                    {"MINUTES": minutes, "STEPS": 100000, "LOWERCASE": 1},
                    name="pretrain_bert.sh")
    return {lang: out / lang for lang in (SRC, TGT)}


def updates_done(system):
    import torch

    import ptnmt_fairseq  # noqa: F401  (allow-lists fairseq checkpoint globals)

    state = torch.load(system.work / system.model / "checkpoint_last.pt", map_location="cpu")
    return state["optimizer_history"][-1]["num_updates"]


def make_test_subset(work, name, lines):
    """The first ``lines`` test sentences of WORK, binarised for both kinds of dictionary."""
    tok = work / "bert-bin" / "tok"
    small = work / f"tok-{name}"
    small.mkdir(exist_ok=True)
    for lang in (SRC, TGT):
        text = (tok / f"test.{lang}").read_text().splitlines()[:lines]
        (small / f"test.{lang}").write_text("\n".join(text) + "\n")
    for kind, task in (("bert", "translation_abnet"), ("fairseq", "translation")):
        dicts = work / f"{kind}-bin"
        harness.run([BIN / "fairseq-preprocess", "--user-dir", PLUGIN, "--task", task,
                     "-s", SRC, "-t", TGT, "--testpref", small / "test",
                     "--srcdict", dicts / f"dict.{SRC}.txt", "--tgtdict", dicts / f"dict.{TGT}.txt",
                     "--destdir", work / f"{kind}-{name}", "--workers", "1"])


def generate(system, subset, batch_size):
    """(fairseq-generate stdout, sentences, decoding seconds as fairseq reports them)."""
    out = harness.run([BIN / "fairseq-generate", system.data(subset), "--user-dir", PLUGIN,
                       "--cpu", "--path", system.work / system.model / "checkpoint_last.pt",
                       "--gen-subset", "test", "--batch-size", batch_size, *DECODE[system.model]])
    m = re.search(r"Translated ([\d,]+) sentences .* in ([\d.]+)s", out.log)
    return out.stdout, int(m.group(1).replace(",", "")), float(m.group(2))


def hypothesis_lengths(text):
    """{sentence id: tokens in its H- line} of fairseq-generate output (EOS not counted)."""
    from ptnmt_fairseq.common.scoring import hypotheses_by_id

    return {i: len(h.split()) for i, h in hypotheses_by_id(text, "H").items()}


def bert_shape(bert):
    """(layers, hidden, heads, intermediate) of a BERT's config, as recipes/abnet/run.sh reads it
    for transformer_bert_size."""
    from transformers import AutoConfig

    from ptnmt_fairseq.common.bert.pretrained import resolve_bert

    c = AutoConfig.from_pretrained(resolve_bert(bert, "bert"))
    return c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size


def ar_model(system, subset, shape=None):
    """(model, task) of ``system``'s AR checkpoint on ``subset``; with ``shape`` (layers, dim,
    heads, ffn) a randomly initialised Transformer of that shape, the checkpoint's options else."""
    from fairseq import checkpoint_utils, tasks

    import ptnmt_fairseq  # noqa: F401

    state = checkpoint_utils.load_checkpoint_to_cpu(str(system.work / system.model / "checkpoint_last.pt"))
    cfg = state["cfg"]
    cfg.task.data = str(system.data(subset))
    task = tasks.setup_task(cfg.task)
    if shape is None:
        model = task.build_model(cfg.model)
        model.load_state_dict(state["model"])
    else:
        layers, dim, heads, ffn = shape
        for side in ("encoder", "decoder"):
            for key, value in (("layers", layers), ("embed_dim", dim), ("attention_heads", heads),
                               ("ffn_embed_dim", ffn)):
                setattr(cfg.model, f"{side}_{key}", value)
        cfg.model.decoder_output_dim = cfg.model.decoder_input_dim = dim
        model = task.build_model(cfg.model)
    task.load_dataset("test")
    return model.eval(), task


def forced_length_timing(model, task, lengths, batch_size, beam=5):
    """Seconds per sentence of beam search on ``task``'s test split, each batch made to emit
    exactly max(``lengths`` of its sentences) tokens (min_len = max_len), and the sentences."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    dataset = task.dataset("test")
    seconds, sentences = 0.0, 0
    with torch.no_grad():
        for sample in batches(task, dataset, batch_size):
            n = max(lengths[i] for i in sample["id"].tolist())
            generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam,
                                          max_len_a=0, max_len_b=n, min_len=n)
            start = time.perf_counter()
            generator.generate([model], sample)
            seconds += time.perf_counter() - start
            sentences += len(sample["id"])
    return seconds / sentences, sentences


def like_with_like_ar(transformer, latency_text, bert):
    """Latency (ms, batch 1) and throughput (sentences/s, batch 32) of the trained
    ``transformer`` and of a randomly initialised Transformer with ``bert``'s shape, both made
    to emit the trained model's token counts on the latency sentences (batch 32: the longest of
    the batch, so its throughput is a lower bound for both)."""
    lengths = hypothesis_lengths(latency_text)
    shape = bert_shape(bert)
    out = {"shape_layers_dim_heads_ffn": list(shape), "mean_emitted_tokens":
           round(sum(lengths.values()) / len(lengths), 2)}
    for name, model_shape in (("transformer", None), ("transformer_bert_size", shape)):
        model, task = ar_model(transformer, "latency", model_shape)
        forced_length_timing(model, task, lengths, 1)  # warm-up: the first batches are slower
        per_sentence, _ = forced_length_timing(model, task, lengths, 1)
        per_batch_sentence, _ = forced_length_timing(model, task, lengths, 32)
        out[name] = {"latency_ms": round(1000 * per_sentence, 1),
                     "throughput_sentences_per_s": round(1 / per_batch_sentence, 2)}
    return out


def load_abnet(system, subset):
    """(model, task, generator, test dataset) of an AB-Net checkpoint, in eval mode, decoding as
    fairseq-generate does with DECODE["abnet"]."""
    from fairseq import checkpoint_utils

    import ptnmt_fairseq  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(system.work / system.model / "checkpoint_last.pt")],
        arg_overrides={"data": str(system.data(subset))})
    model = models[0].eval()
    task.load_dataset("test")
    generator = task.build_generator(models, Namespace(
        iter_decode_max_iter=9, iter_decode_with_beam=4, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B))
    return model, task, generator, task.dataset("test")


def batches(task, dataset, batch_size):
    return task.get_batch_iterator(dataset=dataset, max_sentences=batch_size,
                                   ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)


class ModuleProfiler:
    """torch.profiler ranges around chosen modules (forward pre/post hooks), so the profile
    says which module the time went to; also counts calls and the tokens they saw."""

    def __init__(self, modules):  # {label: [module, ...]}
        self.handles, self.open, self.tokens = [], [], {}
        for label, group in modules.items():
            for module in group:
                self.handles.append(module.register_forward_pre_hook(self._enter(label)))
                self.handles.append(module.register_forward_hook(self._exit))

    def _enter(self, label):
        import torch

        def hook(module, inputs):
            tensor = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
            if tensor is not None and tensor.dim() >= 2:  # B x T [x C]: tokens seen
                self.tokens[label] = self.tokens.get(label, 0) + int(tensor.shape[0] * tensor.shape[1])
            ctx = torch.profiler.record_function(label)
            ctx.__enter__()
            self.open.append(ctx)
        return hook

    def _exit(self, module, inputs, output):
        self.open.pop().__exit__(None, None, None)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def profile_decoding(system, subset):
    """torch.profiler over AB-Net decoding at batch size 1: {module: ms per sentence}, the share
    of the decoding time, decoder passes and canvas tokens per sentence."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, task, generator, dataset = load_abnet(system, subset)
    decoder_layers = list(model.decoder.bert.bert.encoder.layer)
    labels = {
        "source BERT + adapters": [model.encoder],
        "decoder BERT layers": decoder_layers + [model.decoder.bert.bert.embeddings],
        "decoder cross-attention adapters": list(model.decoder.bert.adapters.values()),
        "output projection (MLM head)": [model.decoder.mlm_head],
    }
    hooks = ModuleProfiler(labels)
    passes = ModuleProfiler({"decoder pass": [model.decoder.bert]})
    sentences = 0
    start = time.monotonic()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for sample in batches(task, dataset, 1):
            task.inference_step(generator, [model], sample)
            sentences += 1
    wall = time.monotonic() - start
    hooks.remove()
    passes.remove()
    totals = {e.key: e for e in prof.key_averages() if e.key in labels or e.key == "decoder pass"}
    ms = {label: totals[label].cpu_time_total / 1000 / sentences for label in labels}
    # AdaptedBert runs the adapters between the layers, so the four labels do not overlap.
    per_sentence = 1000 * wall / sentences
    ms["rest (generator, length beam, search)"] = per_sentence - sum(ms.values())
    calls = totals["decoder pass"].count
    return {
        "sentences": sentences, "ms_per_sentence": round(per_sentence, 1),
        "ms_per_sentence_by_module": {k: round(v, 1) for k, v in ms.items()},
        "share": {k: round(v / per_sentence, 3) for k, v in ms.items()},
        "decoder_passes_per_sentence": round(calls / sentences, 2),
        "canvas_tokens_per_pass": round(passes.tokens["decoder pass"] / calls, 1),
        "note": "profiled wall time includes the profiler's own overhead",
    }


def length_errors(system, subset):
    """The length predictor's top-1 canvas length against the reference's ([CLS]/[SEP]
    included): mean absolute error, mean signed error, and the means of both lengths."""
    import torch

    model, task, _, dataset = load_abnet(system, subset)
    pad = task.target_dictionary.pad()
    predicted, reference = [], []
    with torch.no_grad():
        for sample in batches(task, dataset, 32):
            net = sample["net_input"]
            encoder_out = model.forward_encoder([net["src_tokens"], net["src_lengths"]])
            canvas = model.initialize_output_tokens(encoder_out, net["src_tokens"])
            predicted += canvas.ranked_lengths[:, 0].tolist()
            reference += sample["target"].ne(pad).sum(1).tolist()
    diffs = [p - r for p, r in zip(predicted, reference)]
    n = len(diffs)
    return {"sentences": n, "mean_absolute_error": round(sum(map(abs, diffs)) / n, 2),
            "mean_signed_error": round(sum(diffs) / n, 2),
            "mean_predicted": round(sum(predicted) / n, 2),
            "mean_reference": round(sum(reference) / n, 2),
            "exact": round(sum(d == 0 for d in diffs) / n, 3)}


def step_time_and_memory(work, finetune, updates):
    """(median seconds per update after two warm-up updates, peak process RSS in MB) of
    ``updates`` AB-Net (MiniLM) updates, BERTs frozen or fine-tuned."""
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", BIN / "fairseq-train", work / "bert-bin",
           "--user-dir", PLUGIN, "--cpu", "--task", "translation_abnet", "--arch", "abnet_tiny",
           "--source-bert", MINILM, "--target-bert", MINILM,
           "--criterion", "nat_loss", "--label-smoothing", "0.1", "--optimizer", "adam",
           "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
           "--max-tokens", "2048", "--max-update", str(updates), "--log-interval", "1",
           "--no-progress-bar", "--disable-validation", "--no-save", "--seed", "1",
           "--num-workers", "0", "--save-dir", work / ("fb-probe" if finetune else "frozen-probe")]
    if finetune:
        cmd.append("--finetune-bert")
    log = harness.run(cmd, name="fairseq-train probe").log
    ups = [line["ups"] for line in harness.inner_lines(log)][2:]
    rss_kb = int(re.search(r"MAXRSS_KB (\d+)", log).group(1))
    return harness.median(1.0 / u for u in ups if u > 0), rss_kb / 1024


def train_all(work, s):
    """Train every system; returns ({name: System}, {name: updates}, {step: seconds})."""
    minilm, mlm = work / "minilm", work / "mlm_bert"
    steps = {}
    steps["minilm_systems"] = run_recipe(minilm, MINILM_SYSTEMS, s, DISTILL=1, TEACHER="transformer",
                                         DISTILL_BEAM=DISTILL_BEAM,
                                         GEN_EXTRA=" ".join(MAX_LEN)).seconds
    berts, steps["pretrain_berts"] = harness.timed(pretrain_berts, minilm, s["bert_minutes"])
    (mlm / "raw").parent.mkdir(parents=True, exist_ok=True)
    if not (mlm / "raw").exists():  # the same gettext corpus
        (mlm / "raw").symlink_to(minilm / "raw")
    steps["abnet_mlm_bert"] = run_recipe(
        mlm, ["abnet"], s, SRC_BERT=berts[SRC], TGT_BERT=berts[TGT],
        TRAIN_TARGET=minilm / "distilled" / f"train.{TGT}").seconds
    systems = {name: System(minilm, name) for name in MINILM_SYSTEMS if name != "abnet"}
    systems["abnet_minilm"] = System(minilm, "abnet")
    systems["abnet_mlm_bert"] = System(mlm, "abnet")
    return systems, {name: updates_done(sys_) for name, sys_ in systems.items()}, steps, berts


def main():
    args = harness.parse_args(__doc__, "abnet", "also rebuild the corpus, binarised data and BERTs")
    s = SETTINGS[args.mode]
    work = args.work
    model_dirs = [f"minilm/{m}" for m in MINILM_SYSTEMS] + ["mlm_bert/abnet", "minilm/distilled",
                                                             "minilm/distilled-bin",
                                                             "minilm/distilled-fairseq-bin",
                                                             "mlm_bert/bert-bin",
                                                             "mlm_bert/fairseq-bin"]
    harness.prepare_work(work, args.fresh, model_dirs)
    start = time.monotonic()
    systems, updates, steps, berts = train_all(work, s)

    from ptnmt_fairseq.common.scoring import ordered_hypotheses

    bleu_subset = "bin" if s["bleu_lines"] is None else "eval"
    for w in {sys_.work for sys_ in systems.values()}:
        if s["bleu_lines"] is not None:
            make_test_subset(w, "eval", s["bleu_lines"])
        make_test_subset(w, "latency", s["latency_lines"])
        make_test_subset(w, "profile", s["profile_lines"])
    raw = work / "minilm" / "pair" / f"test.{SRC}-{TGT}.{TGT}"
    refs = harness.bert_references(raw, MINILM, raw.with_suffix(".basic"), first=s["bleu_lines"])
    bleu, hyps, latency, throughput = {}, {}, {}, {}
    for name, system in systems.items():
        text, _, _ = generate(system, bleu_subset, BLEU_BATCH)
        bleu[name] = harness.score_generate(text, refs, subword="wordpiece", tokenize="none").value
        hyps[name] = ordered_hypotheses(text, refs, subword="wordpiece")
        latency_text, n, seconds = generate(system, "latency", 1)
        latency[name] = round(1000 * seconds / n, 1)
        if name == "transformer":
            transformer_latency_text = latency_text
        _, n, seconds = generate(system, "latency", 32)
        throughput[name] = round(n / seconds, 2)
    forced = like_with_like_ar(systems["transformer"], transformer_latency_text, MINILM)
    latency["transformer_bert_size"] = forced["transformer_bert_size"]["latency_ms"]
    throughput["transformer_bert_size"] = forced["transformer_bert_size"]["throughput_sentences_per_s"]
    significance = {
        name: harness.paired_significance(hyps[base], hyps[sys_], refs, tokenize="none")
        for name, (base, sys_) in COMPARISONS.items()}
    profile = profile_decoding(systems["abnet_minilm"], "profile")
    lengths = {name: length_errors(systems[name], bleu_subset)
               for name in ("abnet_minilm", "abnet_mlm_bert")}
    minilm_work = work / "minilm"
    frozen_step, frozen_mb = step_time_and_memory(minilm_work, False, s["probe_updates"])
    fb_step, fb_mb = step_time_and_memory(minilm_work, True, s["probe_updates"])
    test_sentences = len(refs)
    result = {
        "setup": {
            "corpus": "gettext de->en", "mode": args.mode, "device": harness.device_description(),
            "berts": {"abnet_minilm": f"{MINILM} (both sides)",
                      "abnet_mlm_bert": "examples/data/pretrain_bert.sh, uncased, "
                                        f"{s['bert_minutes']} minutes per side (4 layers, d256)"},
            "systems": __doc__.split("Measured:")[0].split("recipes/abnet/run.sh:")[1].strip(),
            "train_budget_seconds_per_system": s["budget_s"],
            "max_train_pairs": s["max_train"] or "all", "updates_in_budget": updates,
            "distillation": f"teacher: transformer (beam {DISTILL_BEAM}, at most "
                            "1.2|x|+10 tokens) on the training sources; the non-autoregressive "
                            "systems (cmlm, abnet_*) train on its output",
            "ar_options": AR_EXTRA, "train_extra": s["train_extra"],
            "decoding": {"mask_predict": "T=10 passes, B=4 lengths", "autoregressive": "beam 5",
                         "max_length": "1.2 |x| + 10 tokens (--max-len-a/--max-len-b)"},
            "bleu_test_sentences": test_sentences, "bleu_decoding_batch_size": BLEU_BATCH,
            "bleu": harness.scoring_description(
                hypotheses="WordPiece-joined H- lines", tokenize="none",
                references_name=f"the raw references (pair/test.{SRC}-{TGT}.{TGT}) in "
                                f"{MINILM}'s basic tokenisation (lower-cased, accents stripped)"),
            "significance": harness.SIGNIFICANCE,
            "latency_sentences": s["latency_lines"],
        },
        "ratios": {
            "ar_over_maskpredict_latency": round(latency["transformer"] / latency["abnet_minilm"], 3),
            "ar_bert_size_over_maskpredict_latency":
                round(latency["transformer_bert_size"] / latency["abnet_minilm"], 3),
            "ar_bert_size_over_ar_latency_forced":
                round(forced["transformer_bert_size"]["latency_ms"]
                      / forced["transformer"]["latency_ms"], 3),
            "ar_over_cmlm_latency": round(latency["transformer"] / latency["cmlm"], 3),
            "fb_over_frozen_step_time": round(fb_step / frozen_step, 3),
            "fb_over_frozen_peak_memory": round(fb_mb / frozen_mb, 3),
        },
        "bleu": bleu,
        "significance": significance,
        "latency_ms": latency,
        "throughput_sentences_per_s": throughput,
        "ar_forced_length_timing": dict(forced, note=(
            "in-process SequenceGenerator, beam 5, fp32; each batch emits exactly the trained "
            "transformer's token count (batch 32: its longest); transformer_bert_size is "
            "untrained, its latency_ms / throughput are the ones in latency_ms / "
            "throughput_sentences_per_s")),
        "abnet_decoding_profile": profile,
        "length_prediction": lengths,
        "frozen_vs_fb": {
            "updates": s["probe_updates"], "precision": "fp32",
            "step_time": "1 / fairseq's ups per update (2 decimals), median after 2 warm-up updates",
            "median_step_s": {"frozen": round(frozen_step, 3), "fb": round(fb_step, 3)},
            "peak_rss_mb": {"frozen": round(frozen_mb), "fb": round(fb_mb)},
        },
        "step_wall_s": {k: round(v, 1) for k, v in steps.items()},
    }
    harness.write_results("abnet", args.mode, result, PAPER, start)
    plot(result)


def plot(result):
    setup = result["setup"]
    title = (f"AB-Net on gettext de-en ({setup['mode']}: {setup['train_budget_seconds_per_system']}"
             f" s of training per system, {os.cpu_count()} CPU cores)")
    with harness.figure("abnet", 3, title, size=(15, 4.5)) as axes:
        harness.bars(axes[0], result["bleu"], f"BLEU, {setup['bleu_test_sentences']} test sentences",
                     color="tab:green")
        harness.bars(axes[1], result["latency_ms"], "Decoding latency",
                     ylabel="ms / sentence (batch 1)", color="tab:blue")
        shares = result["abnet_decoding_profile"]["ms_per_sentence_by_module"]
        harness.bars(axes[2], shares, "AB-Net decoding (torch.profiler)", ylabel="ms / sentence",
                     color="tab:purple")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=25, labelsize=8)


if __name__ == "__main__":
    main()
