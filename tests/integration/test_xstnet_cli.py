"""XSTNet through the CLIs: bad audio, progressive training (stage 1 -> stage 2 -> generation
of ST and MT), the speech path learning ASR, frozen wav2vec 2.0, two-rank DDP.

The corpus (``conftest.corpus``) is synthesised with espeak-ng from a small word-by-word
English-French text; the wav2vec 2.0 checkpoint is a tiny random one saved in fairseq's format
and loaded through the real loading code."""
import re

import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from conftest import (
    PLUGIN, XSTNET_TRAIN_ARGS, copy_data, hub_translate, interactive, num_updates, outputs,
    run_cli, run_ddp,
)


def test_bad_audio_through_the_cli_fails_or_skips(corpus, tmp_path):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")
    rows = [l.split("\t") for l in (copy / "train.tsv").read_text().splitlines()[1:]]
    (copy / rows[0][1]).unlink()
    (copy / rows[5][1]).write_bytes(b"")
    args = [copy, "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, "--save-dir", tmp_path / "ck",
            "--max-update", "2", "--train-tasks", "st"]
    failed = run_cli("fairseq-train", args, check=False)
    assert failed.returncode != 0
    assert f"train.tsv:2 (id {rows[0][0]})" in failed.stderr + failed.stdout
    assert "--skip-bad-audio" in failed.stderr + failed.stdout
    skipped = run_cli("fairseq-train", args + ["--skip-bad-audio"])
    log = skipped.stdout + skipped.stderr
    assert f"skipped 2 of {len(rows)} rows with bad audio" in log
    assert num_updates(log) == 2


def test_progressive_training_and_generation_end_to_end(corpus, tmp_path):
    data, w2v = corpus
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    out1 = run_cli("fairseq-train", [data, "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, "--save-dir", stage1,
                                     "--train-tasks", "mt", "--external-mt", "train_mt.tsv",
                                     "--max-update", "6"])
    log1 = out1.stdout + out1.stderr
    assert "mt_loss" in log1 and not re.search(r"\b(st|asr)_loss", log1)
    args2 = [data, "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, "--save-dir", stage2,
             "--train-tasks", "st,asr,mt", "--external-mt", "train_mt.tsv",
             "--finetune-from-model", stage1 / "checkpoint_best.pt"]
    out2 = run_cli("fairseq-train", args2 + ["--max-update", "4"])
    log2 = out2.stdout + out2.stderr
    assert "loaded checkpoint" in log2.lower() and all(f"{t}_loss" in log2 for t in ("st", "asr", "mt"))
    # stage 2 starts from stage 1's text weights
    first = torch.load(stage1 / "checkpoint_best.pt", weights_only=True)["model"]
    assert (first["decoder.layers.0.fc1.weight"] - torch.load(
        stage2 / "checkpoint_last.pt", weights_only=True)["model"]["decoder.layers.0.fc1.weight"]
            ).abs().max() < 0.05
    # wav2vec 2.0 is fine-tuned by default (the authors' setting)
    original = torch.load(w2v, weights_only=True)["model"]
    tuned = torch.load(stage2 / "checkpoint_last.pt", weights_only=True)["model"]
    key = "encoder.layers.0.fc1.weight"
    assert not torch.equal(tuned["encoder.wav2vec2." + key], original[key])
    # (resuming the shared speech task: Chimera's two-stage test; ASR generation with WER: the
    # ASR test below)
    n_test = len((data / "test.tsv").read_text().splitlines()) - 1
    for eval_task, scoring, metric in (("st", "sacrebleu", "BLEU"), ("mt", "sacrebleu", "BLEU")):
        gen = run_cli("fairseq-generate", [
            data, "--user-dir", PLUGIN, "--task", "xstnet", "--eval-task", eval_task, "--cpu",
            "--path", stage2 / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
            "--max-tokens", "200000", "--max-len-b", "10", "--scoring", scoring])
        lines = gen.stdout.splitlines()
        hyps = [l for l in lines if l.startswith("D-")]
        assert len(hyps) == n_test, eval_task
        assert not any("<lang:" in l for l in hyps), eval_task
        assert any(l.startswith("Generate test") and f"{metric}" in l
                   for l in (gen.stdout + gen.stderr).splitlines()), eval_task
    # text MT through fairseq-interactive and the hub interface: what fairseq-generate gives
    transcripts = [r.split("\t")[3] for r in (data / "test.tsv").read_text().split("\n")[1:] if r]
    mt = dict(task="xstnet", eval_task="mt", source_lang="en", target_lang="fr")
    options = [f"--{k.replace('_', '-')}={v}" for k, v in mt.items()] + ["--max-len-b", "10"]
    inter = interactive(data, stage2 / "checkpoint_last.pt", transcripts, extra=options)
    assert outputs(inter.stdout) == outputs(gen.stdout)  # gen: the mt pass of the loop above
    hub = hub_translate(stage2 / "checkpoint_last.pt", data, transcripts,
                        generation={"beam": 2, "max_len_b": 10}, **mt)
    assert hub == [outputs(gen.stdout)[i] for i in range(n_test)]
    speech = interactive(data, stage2 / "checkpoint_last.pt", transcripts[:1], check=False,
                         extra=["--task", "xstnet", "--eval-task", "st"])
    assert speech.returncode != 0 and "decode speech with fairseq-generate" in speech.stderr


@pytest.mark.parametrize("frontend", ["wav2vec2", "fbank"])
def test_speech_path_learns_asr_on_a_tiny_corpus(corpus, tmp_path, frontend):
    """Nothing silently wrong between the waveform and the decoder: ASR can overfit 24 clips,
    through wav2vec 2.0 and through the filterbank front-end."""
    data, w2v = corpus
    speech = ["--w2v-path", w2v] if frontend == "wav2vec2" else \
        ["--speech-frontend", "fbank", "--conv-channels", "64"]
    run_cli("fairseq-train", [
        data, *speech, *XSTNET_TRAIN_ARGS, "--save-dir", tmp_path, "--train-tasks", "asr",
        "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--shrink-channels", "64",
        "--encoder-layers", "2", "--decoder-layers", "2", "--lr", "4e-3", "--warmup-updates", "20",
        "--dropout", "0", "--max-update", "200", "--disable-validation", "--log-interval", "50"])
    gen = run_cli("fairseq-generate", [
        data, "--user-dir", PLUGIN, "--task", "xstnet", "--train-tasks", "asr", "--cpu",
        "--path", tmp_path / "checkpoint_last.pt", "--gen-subset", "train", "--beam", "2",
        "--max-tokens", "400000", "--scoring", "wer"])
    wer = float(re.search(r"WER: ([\d.]+)", gen.stdout + gen.stderr).group(1))
    assert wer < 20, wer


def test_freeze_w2v_keeps_wav2vec2_weights(corpus, tmp_path):
    data, w2v = corpus
    copy_data(data, tmp_path / "data" / "st")  # given relative to the working folder, as users do
    run_cli("fairseq-train", ["data/st", "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, "--save-dir",
                              tmp_path, "--train-tasks", "st,asr", "--max-update", "3",
                              "--freeze-w2v"], cwd=tmp_path)
    trained = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)["model"]
    original = torch.load(w2v, weights_only=True)["model"]
    w2v_keys = [k for k in trained if k.startswith("encoder.wav2vec2.")]
    assert w2v_keys
    for key in w2v_keys:
        assert torch.equal(trained[key], original[key[len("encoder.wav2vec2."):]]), key


def test_two_rank_ddp(corpus, tmp_path):
    """XSTNet with wav2vec 2.0; the filterbank front-end under DDP is Chimera's DDP test (the
    same front-end and task code)."""
    data, w2v = corpus
    outputs = run_ddp([data, "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, "--save-dir", tmp_path,
                       "--train-tasks", "st,asr,mt", "--external-mt", "train_mt.tsv",
                       "--max-update", "3"])
    assert "distributed init (rank 1)" in outputs[1]
    assert num_updates(outputs[0]) == 3
    assert all(f"{t}_loss" in outputs[0] for t in ("st", "asr", "mt"))
    assert (tmp_path / "checkpoint_last.pt").is_file()

