"""Chimera through the CLIs: MT pre-training -> ST fine-tuning (the MT checkpoint loads with
every key) -> resume -> ST and MT generation, MT through fairseq-interactive and the hub
interface; two-rank DDP. The corpus and the tiny wav2vec 2.0 are ``conftest.corpus``."""
import re

import torch

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from conftest import (
    CHIMERA_TRAIN_ARGS, PLUGIN, hub_translate, interactive, num_updates, outputs, run_cli, run_ddp,
)


def test_two_stages_generation_and_resume(corpus, tmp_path):
    data, w2v = corpus
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    out1 = run_cli("fairseq-train", [data, "--w2v-path", w2v, *CHIMERA_TRAIN_ARGS, "--save-dir",
                                     stage1, "--train-tasks", "mt", "--external-mt",
                                     "train_mt.tsv", "--max-update", "6"])
    log1 = out1.stdout + out1.stderr
    assert "mt_loss" in log1 and not re.search(r"\b(st|contrastive)_loss", log1)
    args2 = [data, "--w2v-path", w2v, *CHIMERA_TRAIN_ARGS, "--save-dir", stage2,
             "--train-tasks", "st,mt", "--external-mt", "train_mt.tsv",
             "--finetune-from-model", stage1 / "checkpoint_best.pt"]
    out2 = run_cli("fairseq-train", args2 + ["--max-update", "4"])
    log2 = out2.stdout + out2.stderr
    assert "loaded checkpoint" in log2.lower()  # strict: every key of the MT model
    assert all(f"{t}_loss" in log2 for t in ("st", "mt", "contrastive"))
    contrastive = [float(v) for v in re.findall(r"contrastive_loss[=\s|]+([\d.]+)", log2)]
    assert contrastive and all(v > 0 for v in contrastive)
    # stage 2 starts from stage 1's memory and moves it
    first = torch.load(stage1 / "checkpoint_best.pt", weights_only=True)["model"]
    tuned = torch.load(stage2 / "checkpoint_last.pt", weights_only=True)["model"]
    drift = (first["encoder.memory.queries"] - tuned["encoder.memory.queries"]).abs().max()
    assert 0 < drift < 0.05
    resumed = run_cli("fairseq-train", args2 + ["--max-update", "6"])
    assert "loaded checkpoint" in (resumed.stdout + resumed.stderr).lower()
    assert num_updates(resumed.stdout + resumed.stderr) == 6
    n_test = len((data / "test.tsv").read_text().splitlines()) - 1
    generated = {}
    for eval_task in ("st", "mt"):
        gen = run_cli("fairseq-generate", [
            data, "--user-dir", PLUGIN, "--task", "chimera", "--eval-task", eval_task, "--cpu",
            "--path", stage2 / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
            "--max-tokens", "200000", "--max-len-b", "10", "--scoring", "sacrebleu"])
        hyps = [l for l in gen.stdout.splitlines() if l.startswith("D-")]
        assert len(hyps) == n_test and not any("<lang:" in l for l in hyps), eval_task
        assert re.search(r"Generate test .*BLEU", gen.stdout + gen.stderr), eval_task
        generated[eval_task] = outputs(gen.stdout)
    # text MT through fairseq-interactive and the hub interface: what fairseq-generate gives
    transcripts = [r.split("\t")[3] for r in (data / "test.tsv").read_text().split("\n")[1:] if r]
    mt = dict(task="chimera", eval_task="mt", source_lang="en", target_lang="fr")
    options = [f"--{k.replace('_', '-')}={v}" for k, v in mt.items()] + ["--max-len-b", "10"]
    inter = interactive(data, stage2 / "checkpoint_last.pt", transcripts, extra=options)
    assert outputs(inter.stdout) == generated["mt"]
    hub = hub_translate(stage2 / "checkpoint_last.pt", data, transcripts,
                        generation={"beam": 2, "max_len_b": 10}, **mt)
    assert hub == [generated["mt"][i] for i in range(n_test)]


def test_two_rank_ddp(corpus, tmp_path):
    data, w2v = corpus
    outputs_ = run_ddp([data, "--speech-frontend", "fbank", "--conv-channels", "32",
                        *CHIMERA_TRAIN_ARGS, "--save-dir", tmp_path, "--train-tasks", "st,mt",
                        "--external-mt", "train_mt.tsv", "--max-update", "3"])
    assert "distributed init (rank 1)" in outputs_[1]
    assert num_updates(outputs_[0]) == 3
    assert all(f"{t}_loss" in outputs_[0] for t in ("st", "mt", "contrastive"))
    assert (tmp_path / "checkpoint_last.pt").is_file()


def test_text_path_learns_mt_through_the_memory(corpus, tmp_path):
    """Nothing silently wrong between the source and the decoder: with only the memory slots to
    read, MT overfits the 24 training pairs."""
    data, w2v = corpus
    run_cli("fairseq-train", [
        data, "--w2v-path", w2v, *CHIMERA_TRAIN_ARGS, "--save-dir", tmp_path, "--train-tasks", "mt",
        "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--lr", "4e-3",
        "--warmup-updates", "20", "--dropout", "0", "--max-update", "150",
        "--disable-validation", "--log-interval", "50"])
    gen = run_cli("fairseq-generate", [
        data, "--user-dir", PLUGIN, "--task", "chimera", "--train-tasks", "mt", "--cpu",
        "--path", tmp_path / "checkpoint_last.pt", "--gen-subset", "train", "--beam", "2",
        "--max-tokens-text", "4000"])
    # sentences of 1 to 3 words have no 4-grams (BLEU 0 whatever the output): exact matches
    references = outputs(gen.stdout, "T")
    hypotheses = outputs(gen.stdout)
    assert len(hypotheses) == len(references) == 24
    exact = sum(hypotheses[i] == references[i] for i in references)
    assert exact >= 22, (exact, hypotheses)
