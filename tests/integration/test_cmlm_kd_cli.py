"""C-MLM distillation through the CLIs, all three stages on tiny data with a tiny BERT:
fairseq-train (cmlm_finetune) -> dump_soft_labels -> fairseq-train (translation_cmlm_kd, a
transformer and an LSTM student) -> fairseq-generate, fairseq-interactive and the hub interface;
the student under two-rank DDP."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import (
    BASE_ENV, PLUGIN, TINY_TRANSFORMER, generate, hub_translate, hypotheses, interactive,
    make_tiny_bitext, num_updates, outputs, run_cli, run_ddp, train, train_args,
)
from test_abnet_cli import binarize

TINY_LSTM = ["--arch", "lstm", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
             "--encoder-hidden-size", "16", "--decoder-hidden-size", "16",
             "--decoder-out-embed-dim", "16", "--encoder-layers", "1", "--decoder-layers", "1"]


@pytest.fixture(scope="module")
def kd_data(tmp_path_factory, berts):
    """translation_bert data whose two sides and teacher share the uncased tiny BERT."""
    root = tmp_path_factory.mktemp("cmlm_kd")
    raw = make_tiny_bitext(root / "raw", n_train=120, pair="src-tgt")
    return binarize(raw, (berts[0], berts[0]), root / "bin", task="translation_bert")


def student_args(data, soft, extra=()):
    return ["--task", "translation_cmlm_kd", "--soft-labels", soft, "--criterion", "cmlm_kd",
            "--kd-alpha", "0.5", "--kd-temperature", "10", "--label-smoothing", "0.1", *extra]


def test_three_stages_end_to_end(kd_data, berts, tmp_path):
    from ptnmt_fairseq.common.bert.dictionary import BertDictionary

    teacher = tmp_path / "teacher"
    out = train(kd_data, teacher, model_args=["--arch", "cmlm_teacher"], extra=[
        "--task", "cmlm_finetune", "--bert", berts[0], "--criterion", "cmlm",
        "--lr", "3e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "20",
        "--total-num-update", "300", "--max-update", "300", "--max-tokens", "1500",
        "--weight-decay", "0.01", "--log-interval", "100", "--validate-interval", "50"])
    assert "accuracy" in out.stdout + out.stderr
    soft = tmp_path / "soft"
    dump = subprocess.run([sys.executable, "-m", "ptnmt_fairseq.cmlm_kd.dump_soft_labels",
                           kd_data, "--path", teacher / "checkpoint_best.pt", "--out", soft,
                           "--k", "16", "--cpu"], env=BASE_ENV, capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr[-3000:]
    stats = json.loads((soft / "dump.json").read_text())
    assert stats["target_tokens_per_second"] > 0 and stats["bytes_per_target_token"] > 16 * 6
    # the teacher's top-1 ids are target words, and [SEP] (fairseq's eos) at the EOS positions
    # (a random teacher: 1 in 21 each; this one, 300 updates: 0.95 and 0.8)
    dictionary = BertDictionary.load(kd_data / "dict.tgt.txt")
    offsets = np.load(soft / "offsets.npy")
    top1 = np.load(soft / "ids.npy")[:, 0]
    eos_rows = offsets[1:] - 1
    assert np.mean(top1[eos_rows] == dictionary.eos()) > 0.6
    word_rows = np.setdiff1d(np.arange(len(top1)), eos_rows)
    assert np.mean([dictionary[i].isalpha() and len(dictionary[i]) == 1
                    for i in top1[word_rows]]) > 0.9
    for name, arch in (("transformer", TINY_TRANSFORMER), ("lstm", TINY_LSTM)):
        student = train(kd_data, tmp_path / name, model_args=arch,
                        extra=student_args(kd_data, soft, ["--max-update", "4"]))
        log = student.stdout + student.stderr
        assert num_updates(log) == 4 and "kd_loss" in log, name
    # the student is an ordinary translation_bert model: generate, interactive and the hub agree
    checkpoint = tmp_path / "transformer" / "checkpoint_last.pt"
    gen = generate(kd_data, checkpoint, extra=["--task", "translation_cmlm_kd"])
    generated = hypotheses(gen.stdout)
    assert sorted(generated) == list(range(10))
    sources = [outputs(gen.stdout, "S")[i] for i in range(10)]
    inter = interactive(kd_data, checkpoint, sources, extra=["--task", "translation_cmlm_kd"])
    assert hypotheses(inter.stdout) == generated
    assert hub_translate(checkpoint, kd_data, sources) == [generated[i] for i in range(10)]


def random_store(data, soft, sizes, seed=0):
    """A store of random labels (K = 8) for targets of ``sizes``, bound to the real data."""
    from ptnmt_fairseq.cmlm_kd.soft_labels import write_store

    rng = np.random.RandomState(seed)
    total = int(np.sum(sizes))
    write_store(soft, rng.randint(5, 20, size=(total, 8)), rng.randn(total, 8), sizes,
                teacher="random", target_prefix=data / "train.src-tgt.tgt",
                source_prefix=data / "train.src-tgt.src", dictionary_path=data / "dict.tgt.txt")


def test_student_trains_under_ddp_and_stale_labels_are_refused(kd_data, tmp_path):
    from fairseq.data import data_utils

    target = data_utils.load_indexed_dataset(str(kd_data / "train.src-tgt.tgt"), None)
    sizes = np.array(target.sizes)  # a copy: the memory map closes with the dataset
    soft = tmp_path / "soft"
    random_store(kd_data, soft, sizes)
    # 120 sentences in an odd number of batches: rank 1 also trains on fairseq's dummy batch
    outputs = run_ddp([kd_data, "--user-dir", PLUGIN, "--cpu", *TINY_TRANSFORMER,
                       "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "500",
                       "--max-update", "3", "--save-dir", tmp_path / "ck", "--no-progress-bar",
                       "--log-interval", "1", *student_args(kd_data, soft)])
    assert "distributed init (rank 1)" in outputs[1] and num_updates(outputs[0]) == 3
    assert "kd_loss" in outputs[0]
    # labels whose first sentence has one row too many: refused before training, named
    random_store(kd_data, soft, np.concatenate([[sizes[0] + 1], sizes[1:]]))
    failed = run_cli("fairseq-train", train_args(kd_data, tmp_path / "ck2", TINY_TRANSFORMER,
                                                  student_args(kd_data, soft)), check=False)
    assert failed.returncode != 0
    assert f"sentence 0 has {sizes[0] + 1} label rows" in failed.stderr + failed.stdout
