"""Test helpers: tiny corpora, the real fairseq CLIs as subprocesses, and two-rank gloo DDP.

Written after fairseq's own ``tests/utils.py`` (which is not shipped in the wheel): every helper
runs the console script a user would type, so a test exercises argument parsing, ``--user-dir``
import, checkpoint writing and loading exactly as on the command line.
"""
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = str(REPO / "ptnmt_fairseq")
BIN = Path(sys.executable).parent

# Subprocess environment: offline, single-threaded BLAS so two ranks share the 2 cores fairly,
# and no TORCH_FORCE_* variable, so the weights_only behaviour under test is torch's default.
BASE_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")
}
BASE_ENV.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
    PYTHONWARNINGS="ignore",
)


def cli(name):
    """Path of a console script installed beside the running interpreter (fairseq-train, ...)."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is fairseq installed in {sys.prefix}?")
    return str(path)


def run_cli(name, args, env=None, check=True, timeout=600, cwd=None):
    """Run a fairseq console script; on failure show its output so the test log tells why."""
    full_env = dict(BASE_ENV, **(env or {}))
    proc = subprocess.run(
        [cli(name)] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{name} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def make_tiny_bitext(directory, n_train=100, n_valid=20, n_test=10, maxlen=12, seed=0,
                     src="src", tgt="tgt", pair=None):
    """Random letter sentences whose target is the reversed source (learnable, like fairseq's)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    letters = "abcdefghijklmnop"
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        src_lines, tgt_lines = [], []
        for _ in range(n):
            words = [rng.choice(letters) for _ in range(rng.randint(2, maxlen))]
            src_lines.append(" ".join(words))
            tgt_lines.append(" ".join(reversed(words)).upper())
        prefix = f"{split}.{pair}" if pair else split
        (directory / f"{prefix}.{src}").write_text("\n".join(src_lines) + "\n")
        (directory / f"{prefix}.{tgt}").write_text("\n".join(tgt_lines) + "\n")
    return directory


def preprocess(raw_dir, dest_dir, src="src", tgt="tgt", extra=()):
    raw_dir = Path(raw_dir)
    run_cli("fairseq-preprocess", [
        "--source-lang", src, "--target-lang", tgt,
        "--trainpref", raw_dir / "train", "--validpref", raw_dir / "valid",
        "--testpref", raw_dir / "test", "--destdir", dest_dir, "--workers", "1",
        *extra,
    ])
    return Path(dest_dir)


TINY_TRANSFORMER = [
    "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]


def train_args(data_dir, save_dir, model_args=TINY_TRANSFORMER, extra=()):
    return [
        data_dir, "--user-dir", PLUGIN, "--cpu", "--save-dir", save_dir,
        *model_args,
        "--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "10", "--max-tokens", "500", "--max-update", "3",
        "--no-progress-bar", "--log-interval", "1", "--num-workers", "0", "--seed", "1",
        "--criterion", "cross_entropy", *extra,
    ]


def train(data_dir, save_dir, model_args=TINY_TRANSFORMER, extra=(), env=None):
    return run_cli("fairseq-train", train_args(data_dir, save_dir, model_args, extra), env=env)


def generate(data_dir, checkpoint, extra=(), env=None, check=True):
    return run_cli("fairseq-generate", [
        data_dir, "--user-dir", PLUGIN, "--cpu", "--path", checkpoint,
        "--beam", "2", "--max-tokens", "500", "--gen-subset", "test", *extra,
    ], env=env, check=check)


def hypotheses(generate_output):
    """The H- lines of fairseq-generate output, keyed by sentence id."""
    hyps = {}
    for line in generate_output.splitlines():
        if line.startswith("H-"):
            sid, _score, text = (line.split("\t") + [""])[:3]
            hyps[int(sid[2:])] = text
    return hyps


def num_updates(train_output):
    """The last num_updates fairseq-train logged (0 if it never trained)."""
    found = re.findall(r"num_updates[\"']?[:=\s|]+[\"']?(\d+)", train_output)
    return int(found[-1]) if found else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args, world_size=2, env=None, timeout=900, script="fairseq-train"):
    """Run one training command as ``world_size`` gloo ranks on CPU; return each rank's output.

    This is the launch the README documents: one process per rank with explicit
    ``--distributed-rank``, ``--distributed-no-spawn`` and ``--ddp-backend legacy_ddp``
    (pytorch_ddp passes device_ids=[0], which DDP rejects on CPU).
    """
    port = free_port()
    common = [
        "--distributed-world-size", str(world_size), "--distributed-backend", "gloo",
        "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
        "--device-id", "0", "--ddp-backend", "legacy_ddp",
    ]
    full_env = dict(BASE_ENV, **(env or {}))
    procs = [
        subprocess.Popen(
            [cli(script)] + [str(a) for a in args] + common + ["--distributed-rank", str(r)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )
        for r in range(world_size)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise AssertionError(f"rank {rank} exited {p.returncode}\n{out[-8000:]}")
    return outputs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A binarised tiny bitext shared by tests that only need *some* data."""
    root = tmp_path_factory.mktemp("tiny")
    raw = make_tiny_bitext(root / "raw")
    return preprocess(raw, root / "bin")
