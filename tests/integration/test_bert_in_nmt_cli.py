"""CTNMT and BERT-fused through the CLIs on tiny data with a tiny source BERT: a Transformer
baseline; BERT-fused warm-started from it strictly (and refused from a mismatched one), trained
on cached BERT features, then fairseq-generate, fairseq-interactive and the hub; CTNMT with all
three strategies, its rho schedule across a resume, and two-rank DDP."""
import re
import subprocess
import sys

import pytest
import torch

from conftest import (
    BASE_ENV, PLUGIN, build_task, generate, hub_translate, hypotheses, interactive, num_updates,
    outputs, run_ddp, train, train_args,
)
from ptnmt_fairseq.ctnmt.lr_scheduler import slanted_triangular_rate

TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
        "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]
COMMON = ["--task", "translation_bert", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1"]
CTNMT_ALL = ["--arch", "ctnmt_tiny", *TINY, "--asymptotic-distillation"]
CTNMT_TRAIN = ["--criterion", "ctnmt_distill", "--lr-scheduler", "rate_scheduled",
               "--warmup-updates", "4", "--bert-rate-warmup-updates", "4",
               "--bert-rate-total-updates", "8"]


@pytest.fixture(scope="module")
def baseline(bert_nmt_data, tmp_path_factory):
    """A Transformer trained on the translation_bert data: BERT-fused's warm start."""
    save = tmp_path_factory.mktemp("baseline")
    train(bert_nmt_data, save, model_args=["--arch", "transformer", *TINY],
          extra=[*COMMON, "--max-update", "20"])
    return save / "checkpoint_last.pt"


def logged(log, key):
    """{num_updates: value} of ``key`` in fairseq-train's train_inner lines."""
    found = {}
    for line in log.splitlines():
        if "train_inner" in line and f" {key}=" in line:
            update = int(re.search(r"num_updates=(\d+)", line).group(1))
            found[update] = float(re.search(rf" {key}=([0-9.e-]+)", line).group(1))
    return found


def test_bert_fused_warm_start_cache_and_translation(bert_nmt_data, berts, baseline, tmp_path):
    # the warm start loads every Transformer tensor (in process, through the task as the CLI)
    argv = [bert_nmt_data, "--user-dir", PLUGIN, "--task", "translation_bert", "--cpu",
            "--arch", "bert_fused_base", *TINY, "--source-bert", berts[0]]
    cfg, task = build_task([*argv, "--warm-start-nmt", baseline])
    model = task.build_model(cfg.model)
    nmt = torch.load(baseline, weights_only=False)["model"]
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in nmt.items())
    assert any(".bert_attn." in k for k in own)
    # ... strictly: a checkpoint of another width is refused, naming the tensor
    cfg, task = build_task([*argv, "--encoder-embed-dim", "32", "--warm-start-nmt", baseline])
    with pytest.raises(ValueError, match=r"shapes that differ: .*encoder\..* \(\d+, 16\) vs"):
        task.build_model(cfg.model)
    # ... and a missing one is an error, not a silent fresh start
    cfg, task = build_task([*argv, "--warm-start-nmt", tmp_path / "nope.pt"])
    with pytest.raises(FileNotFoundError, match="--warm-start-nmt .*nope.pt: no such checkpoint"):
        task.build_model(cfg.model)
    # training reads the cached features of its frozen BERT
    cache = tmp_path / "cache"
    built = subprocess.run([sys.executable, "-m", "ptnmt_fairseq.common.bert.feature_cache",
                            bert_nmt_data, "--source-bert", berts[0], "-s", "src", "-t", "tgt",
                            "--splits", "train", "valid", "--out", cache],
                           env=BASE_ENV, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    save = tmp_path / "fused"
    out = train(bert_nmt_data, save, model_args=["--arch", "bert_fused_base", *TINY], extra=[
        *COMMON, "--source-bert", berts[0], "--warm-start-nmt", baseline,
        "--bert-feature-cache", cache, "--max-update", "6"])
    assert num_updates(out.stdout + out.stderr) == 6
    checkpoint = save / "checkpoint_last.pt"
    gen = generate(bert_nmt_data, checkpoint, extra=["--task", "translation_bert"])
    generated = hypotheses(gen.stdout)
    assert sorted(generated) == list(range(10))
    sources = [outputs(gen.stdout, "S")[i] for i in range(10)]
    inter = interactive(bert_nmt_data, checkpoint, sources, extra=["--task", "translation_bert"])
    assert hypotheses(inter.stdout) == generated
    assert hub_translate(checkpoint, bert_nmt_data, sources) == [generated[i] for i in range(10)]


def test_ctnmt_schedule_survives_resume_and_translates(bert_nmt_data, berts, tmp_path):
    save = tmp_path / "ctnmt"
    extra = [*COMMON, *CTNMT_TRAIN, "--source-bert", berts[0]]
    first = train(bert_nmt_data, save, model_args=CTNMT_ALL, extra=[*extra, "--max-update", "5"])
    resumed = train(bert_nmt_data, save, model_args=CTNMT_ALL,
                    extra=[*extra, "--max-update", "10"])
    log = first.stdout + first.stderr + resumed.stdout + resumed.stderr
    assert "loaded checkpoint" in (resumed.stdout + resumed.stderr).lower()
    lr, bert_lr = logged(log, "lr"), logged(log, "bert_lr")
    assert sorted(bert_lr) == list(range(1, 11))  # the second run went on from update 5
    for t in bert_lr:  # Eq. (10) with T' = 4, T = 8, rho times the NMT rate
        assert bert_lr[t] == pytest.approx(slanted_triangular_rate(t, 4, 8) * lr[t], rel=1e-3,
                                           abs=1e-9)
    assert bert_lr[10] == 0 and max(bert_lr.values()) == pytest.approx(lr[4], rel=1e-3)
    assert "distill_distance" in log
    checkpoint = save / "checkpoint_last.pt"
    gen = generate(bert_nmt_data, checkpoint, extra=["--task", "translation_bert"])
    generated = hypotheses(gen.stdout)
    sources = [outputs(gen.stdout, "S")[i] for i in range(10)]
    assert hub_translate(checkpoint, bert_nmt_data, sources) == [generated[i] for i in range(10)]


def test_ctnmt_trains_under_two_rank_ddp(bert_nmt_data, berts, tmp_path):
    args = train_args(bert_nmt_data, tmp_path / "ddp", CTNMT_ALL,
                      [*COMMON, *CTNMT_TRAIN, "--source-bert", berts[0], "--max-update", "4"])
    rank0 = run_ddp(args)[0]  # run_ddp fails the test unless both ranks exit 0
    assert num_updates(rank0) == 4 and "bert_lr=" in rank0
