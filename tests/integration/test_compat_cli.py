"""Regression tests for ``ptnmt_fairseq/common/compat.py`` seen through the CLIs (checkpoint
loading, resume, torchrun, generation of every sentence): each fails without its fix."""
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (applies the fixes, as --user-dir does)
from conftest import (
    BASE_ENV, cli, free_port, generate, hypotheses, interactive, make_tiny_bitext, num_updates,
    preprocess, run_cli, train, train_args,
)

EVAL_BLEU = [
    "--task", "translation", "--eval-bleu", "--eval-bleu-args", '{"beam": 1}',
    "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A checkpoint written by fairseq-train with --eval-bleu (numpy counts in its meters)."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    train(tiny_data, save_dir, extra=EVAL_BLEU + ["--num-batch-buckets", "4"])  # numpy 2 path
    return save_dir


@pytest.fixture(scope="module")
def generated_last(tiny_data, trained):
    """fairseq-generate's output for checkpoint_last.pt, shared by the tests that read it."""
    return generate(tiny_data, trained / "checkpoint_last.pt").stdout


def test_checkpoint_needs_the_allow_list(trained):
    # Without the plugin, plain torch 2.9 refuses the checkpoint: this is the bug we fix.
    proc = subprocess.run(
        [sys.executable, "-c",
         "import torch, sys; torch.load(sys.argv[1], map_location='cpu')",
         str(trained / "checkpoint_last.pt")],
        capture_output=True, text=True, env=BASE_ENV,
    )
    assert proc.returncode != 0 and "Unsupported global" in proc.stderr


def test_generate_loads_fairseq_checkpoint(generated_last):
    assert len(hypotheses(generated_last)) == 10  # every test sentence decoded


def test_generate_loads_best_checkpoint_with_bleu_meters(tiny_data, trained):
    state = torch.load(trained / "checkpoint_best.pt", map_location="cpu")  # weights_only=True
    assert "bleu" in str(state["extra_state"]["metrics"]) or state["extra_state"]["best"]
    out = generate(tiny_data, trained / "checkpoint_best.pt")
    assert len(hypotheses(out.stdout)) == 10


def test_interactive_loads_checkpoint(tiny_data, trained):
    proc = interactive(tiny_data, trained / "checkpoint_last.pt", ["a b c"],
                       extra=["--source-lang", "src", "--target-lang", "tgt"])
    assert any(line.startswith("H-0\t") for line in proc.stdout.splitlines())


def test_restore_file_resumes_training(tiny_data, trained, tmp_path):
    shutil.copy(trained / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")
    out = train(tiny_data, tmp_path, extra=EVAL_BLEU + ["--max-update", "5"])
    log = out.stdout + out.stderr
    assert "Loaded checkpoint" in log and "@ 3 updates" in log
    assert num_updates(log) == 5


def _rename_pickle_globals(src, dst, old, new):
    """Rewrite the pickle inside a torch zip checkpoint, renaming a module in its globals."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item, data)


def test_numpy1_checkpoint_names_load(trained, tmp_path):
    # numpy<2 pickles numpy.core.multiarray._reconstruct; numpy 2 writes numpy._core.
    legacy = tmp_path / "legacy.pt"
    torch.save({"counts": np.arange(4, dtype=np.int64)}, tmp_path / "new.pt")
    _rename_pickle_globals(tmp_path / "new.pt", legacy, b"numpy._core.multiarray",
                           b"numpy.core.multiarray")
    state = torch.load(legacy, map_location="cpu")
    assert state["counts"].tolist() == [0, 1, 2, 3]


def test_torchrun_on_cpu_trains_two_ranks(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path, extra=["--distributed-backend", "gloo",
                                                  "--ddp-backend", "legacy_ddp"])
    proc = subprocess.run(
        [cli("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
         cli("fairseq-train")] + [str(a) for a in args],
        capture_output=True, text=True, env=BASE_ENV, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "ZeroDivisionError" not in log
    assert "distributed init (rank 1)" in log  # two ranks, not two separate jobs
    assert num_updates(log) == 3  # a silent no-op exit 0 would log no updates


def test_explicit_init_without_no_spawn_fails_loudly(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path, extra=[
        "--distributed-world-size", "2", "--distributed-backend", "gloo",
        "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}",
    ])
    proc = run_cli("fairseq-train", args, check=False)
    assert proc.returncode != 0
    assert "would spawn 0 workers" in proc.stderr and "--distributed-no-spawn" in proc.stderr


def test_generate_translates_every_test_sentence(generated_last):
    # 10 test sentences with the default --required-batch-size-multiple 8: all 10 are scored.
    assert sorted(hypotheses(generated_last)) == list(range(10))


def test_bucketing_and_an_empty_binarised_file_through_fairseq_train(tiny_data, trained,
                                                                     tmp_path):
    state = torch.load(trained / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 3  # trained with 4 length buckets
    data = shutil.copytree(tiny_data, tmp_path / "bin")
    (data / "valid.src-tgt.src.bin").write_bytes(b"")  # an interrupted fairseq-preprocess
    proc = run_cli("fairseq-train", train_args(data, tmp_path / "ck2"), check=False)
    assert proc.returncode != 0
    assert "valid.src-tgt.src.bin: 0 bytes, but its index" in proc.stderr
    assert "AttributeError" not in proc.stderr


def test_generation_takes_the_length_limits_from_the_checkpoint(tmp_path):
    raw = make_tiny_bitext(tmp_path / "raw", n_train=40, n_valid=4, n_test=2)
    long_source = " ".join(["a", "b", "c"] * 400)  # 1,200 tokens, beyond fairseq's default 1024
    for side, text in (("src", long_source), ("tgt", "A B C")):
        with open(raw / f"test.{side}", "a") as f:
            f.write(text + "\n")
    data = preprocess(raw, tmp_path / "bin")
    limits = ["--max-source-positions", "2048", "--max-target-positions", "2048"]
    train(data, tmp_path / "ck", extra=[*limits, "--max-update", "1", "--max-tokens", "4000"])
    out = generate(data, tmp_path / "ck" / "checkpoint_last.pt",
                   extra=["--max-tokens", "4000", "--max-len-b", "5"])
    assert sorted(hypotheses(out.stdout)) == [0, 1, 2]  # the 1,200-token source included
    assert "--max-source-positions 2048: the checkpoint's (was 1024)" in out.stderr
    capped = generate(data, tmp_path / "ck" / "checkpoint_last.pt", check=False, extra=[
        "--max-tokens", "4000", "--max-source-positions", "1024"])  # given: the user's limit
    assert capped.returncode != 0 and "max_positions=(1024, 2048)" in capped.stderr


def test_bf16_trains_on_the_cpu(tiny_data, tmp_path):
    # fairseq's --bf16 implies --tpu: without the fix, Trainer asks torch_xla for a device
    out = train(tiny_data, tmp_path, extra=["--bf16"])
    log = out.stdout + out.stderr
    assert num_updates(log) == 3 and "xla" not in log.lower()
    state = torch.load(tmp_path / "checkpoint_last.pt", map_location="cpu")
    # bf16 weights with fp32 master copies (fairseq saves the weights upcast to fp32)
    assert state["optimizer_history"][-1]["optimizer_name"] == "FP16Optimizer"
    assert len(hypotheses(generate(tiny_data, tmp_path / "checkpoint_last.pt").stdout)) == 10


def test_finetuning_with_a_time_budget_does_not_count_the_pretraining_time(tiny_data, trained,
                                                                          tmp_path):
    # a pre-trained checkpoint that says it trained for an hour
    state = torch.load(trained / "checkpoint_last.pt", map_location="cpu")
    state["extra_state"]["previous_training_time"] = 3600.0
    torch.save(state, tmp_path / "pretrained.pt")
    budget = ["--stop-time-hours", "0.5", "--max-update", "3"]
    out = train(tiny_data, tmp_path / "ft", extra=budget + [
        "--finetune-from-model", tmp_path / "pretrained.pt"])
    assert num_updates(out.stdout + out.stderr) == 3  # without the fix: 0, "time limit"
    # a plain resume still counts the time already trained: it stops at once
    (tmp_path / "resume").mkdir()
    shutil.copy(tmp_path / "pretrained.pt", tmp_path / "resume" / "checkpoint_last.pt")
    resumed = train(tiny_data, tmp_path / "resume", extra=budget + ["--max-update", "9"])
    log = resumed.stdout + resumed.stderr
    assert "> stop_time_hours: 0.5 hour(s)" in log and num_updates(log) < 9
