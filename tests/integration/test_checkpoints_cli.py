"""Checkpoint averaging (``python -m ptnmt_fairseq.average_checkpoints``, fairseq's semantics) and
TensorBoard logging, on checkpoints and event files written by a real fairseq-train run."""
import subprocess
import sys

import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (the weights-only allow-list, as --user-dir applies it)
from conftest import BASE_ENV, REPO, generate, hypotheses, train
from ptnmt_fairseq.common import checkpoints


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """Five updates with an update checkpoint after each, epoch checkpoints, TensorBoard logs."""
    root = tmp_path_factory.mktemp("avg")
    train(tiny_data, root / "ckpt", extra=[
        "--max-update", "5", "--save-interval-updates", "1", "--keep-interval-updates", "10",
        "--tensorboard-logdir", root / "tb"], epoch_checkpoints=True)
    return root


def average(*args):
    return subprocess.run([sys.executable, "-m", "ptnmt_fairseq.average_checkpoints", *map(str, args)],
                          capture_output=True, text=True, env=BASE_ENV, cwd=REPO)


def test_tensorboard_logdir_writes_event_files(run):
    events = {p.parent.name for p in (run / "tb").rglob("events.out.tfevents.*")}
    assert {"train", "train_inner"} <= events, sorted((run / "tb").rglob("*"))


def test_the_newest_update_checkpoints_are_averaged_by_hand(run, tiny_data):
    names = sorted(p.name for p in (run / "ckpt").glob("checkpoint_*_*.pt"))
    assert len(names) >= 3, names  # update 4 ends epoch 1: checkpoint1.pt holds it
    out = average("--inputs", run / "ckpt", "--num-update-checkpoints", 3,
                  "--output", run / "avg.pt")
    assert out.returncode == 0, out.stderr
    chosen = checkpoints.last_checkpoints(run / "ckpt", 3, update_based=True)
    updates = [int(p.rsplit("_", 1)[1][:-3]) for p in chosen]
    assert updates == sorted(updates, reverse=True) and updates[0] == max(
        int(n.rsplit("_", 1)[1][:-3]) for n in names)  # the newest, newest first
    states = [torch.load(p, map_location="cpu") for p in chosen]  # weights_only=True
    averaged = torch.load(run / "avg.pt", map_location="cpu")
    key = "encoder.layers.0.fc1.weight"
    by_hand = (states[0]["model"][key] + states[1]["model"][key] + states[2]["model"][key]) / 3
    assert not torch.equal(states[0]["model"][key], states[2]["model"][key])  # it trained
    assert torch.allclose(averaged["model"][key], by_hand, atol=1e-7)
    assert averaged["optimizer_history"] == states[0]["optimizer_history"]  # the first's state
    # the average is a checkpoint fairseq-generate decodes, every test sentence
    assert len(hypotheses(generate(tiny_data, run / "avg.pt").stdout)) == 10


def test_epoch_checkpoints_and_the_upper_bound(run):
    epochs = sorted(p.name for p in (run / "ckpt").glob("checkpoint[0-9]*.pt"))
    assert epochs[:1] == ["checkpoint1.pt"], epochs
    assert checkpoints.last_checkpoints(run / "ckpt", 1, upper_bound=1) == \
        [str(run / "ckpt" / "checkpoint1.pt")]
    out = average("--inputs", run / "ckpt", "--num-epoch-checkpoints", 9, "--output", run / "x.pt")
    assert out.returncode == 1 and "need 9" in out.stderr and str(run / "ckpt") in out.stderr
    assert not (run / "x.pt").exists()


def test_checkpoints_of_different_models_are_refused(run):
    first = run / "ckpt" / "checkpoint_1_1.pt"
    state = checkpoints.average_checkpoints([first])
    key = "encoder.layers.0.fc1.weight"
    wider = dict(state, model=dict(state["model"], **{key: torch.zeros(64, 16)}))
    checkpoints.save_checkpoint_atomically(wider, run / "wider.pt")
    out = average("--inputs", first, run / "wider.pt", "--output", run / "bad.pt")
    assert out.returncode == 1
    assert f"parameter {key} has shape (64, 16) in {run / 'wider.pt'} but (32, 16)" in out.stderr
    other = checkpoints.average_checkpoints([first])
    other["cfg"]["model"].arch = "transformer_iwslt_de_en"  # fairseq keeps a Namespace here
    checkpoints.save_checkpoint_atomically(other, run / "other.pt")
    out = average("--inputs", first, run / "other.pt", "--output", run / "bad.pt")
    assert out.returncode == 1 and "'transformer_iwslt_de_en' checkpoint" in out.stderr
    assert not (run / "bad.pt").exists()
