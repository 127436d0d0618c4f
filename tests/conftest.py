"""Test helpers: tiny corpora, the real fairseq CLIs as subprocesses, two-rank gloo DDP, one task
builder, and the tiny data and models of each family, shared by both tiers as session fixtures.

Written after fairseq's own ``tests/utils.py`` (which is not shipped in the wheel): every CLI
helper runs the console script a user would type, so a test exercises argument parsing,
``--user-dir`` import, checkpoint writing and loading exactly as on the command line.

Tiers: ``tests/unit`` (formulas, data, errors; in-process) and ``tests/integration`` (the CLIs,
DDP); each test is marked ``unit`` or ``integration`` by its folder, so ``-m unit`` runs one tier.
"""
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_bert import make_tiny_bert, source_vocab, target_vocab
from tiny_wav2vec2 import make_tiny_wav2vec2

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


def train_args(data_dir, save_dir, model_args=TINY_TRANSFORMER, extra=(),
               epoch_checkpoints=False):
    """fairseq-train options for a few updates on tiny data; without ``epoch_checkpoints`` only
    checkpoint_last/best are written (a BERT-sized model's checkpointN.pt costs seconds each)."""
    return [
        data_dir, "--user-dir", PLUGIN, "--cpu", "--save-dir", save_dir,
        *model_args,
        "--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "10", "--max-tokens", "500", "--max-update", "3",
        "--no-progress-bar", "--log-interval", "1", "--num-workers", "0", "--seed", "1",
        "--criterion", "cross_entropy", *([] if epoch_checkpoints else ["--no-epoch-checkpoints"]),
        *extra,
    ]


def train(data_dir, save_dir, model_args=TINY_TRANSFORMER, extra=(), env=None,
          epoch_checkpoints=False):
    return run_cli("fairseq-train", train_args(data_dir, save_dir, model_args, extra,
                                               epoch_checkpoints), env=env)


def generate(data_dir, checkpoint, extra=(), env=None, check=True):
    return run_cli("fairseq-generate", [
        data_dir, "--user-dir", PLUGIN, "--cpu", "--path", checkpoint,
        "--beam", "2", "--max-tokens", "500", "--gen-subset", "test", *extra,
    ], env=env, check=check)


def interactive(data_dir, checkpoint, lines, extra=(), env=None, check=True):
    """fairseq-interactive on ``lines`` (stdin); returns the process."""
    full_env = dict(BASE_ENV, **(env or {}))
    proc = subprocess.run(
        [cli("fairseq-interactive"), str(data_dir), "--user-dir", PLUGIN, "--cpu",
         "--path", str(checkpoint), "--beam", "2", *[str(a) for a in extra]],
        input="".join(f"{line}\n" for line in lines), capture_output=True, text=True,
        env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-interactive exited {proc.returncode}\n{proc.stderr[-6000:]}")
    return proc


def hub_translate(checkpoint, data_dir, sentences, generation=None, **overrides):
    """``from_pretrained(...).translate(sentences, **generation)`` through fairseq's hub
    interface, in process; ``overrides`` go to ``from_pretrained`` (task options)."""
    from fairseq import hub_utils

    loaded = hub_utils.from_pretrained(str(Path(checkpoint).parent), Path(checkpoint).name,
                                       str(data_dir), user_dir=PLUGIN, **overrides)
    hub = hub_utils.GeneratorHubInterface(loaded["args"], loaded["task"], loaded["models"])
    return hub.translate(sentences, **(generation or {"beam": 2}))


def hypotheses(generate_output):
    """The H- lines of fairseq-generate output, keyed by sentence id."""
    return outputs(generate_output, "H")


def outputs(generate_output, kind="D"):
    """The ``kind``- lines (H: tokens, D: detokenised) of generate/interactive output, by id."""
    hyps = {}
    for line in generate_output.split("\n"):
        if line.startswith(f"{kind}-"):
            fields = line.split("\t")
            text = fields[1] if kind in "ST" else (fields + [""])[2]  # S-/T- lines have no score
            hyps[int(fields[0][2:])] = text
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


def pytest_collection_modifyitems(items):
    for item in items:
        tier = "integration" if "integration" in item.path.parts else "unit"
        item.add_marker(getattr(pytest.mark, tier))


def build_task(argv):
    """(cfg, task) as ``fairseq-train ARGV`` builds them: its parser, the arch defaults, omegaconf."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv])
    cfg = convert_namespace_to_omegaconf(args)
    return cfg, tasks.setup_task(cfg.task)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# BERT family: two tiny BERTs with different vocabularies (cased/uncased), saved as HF models
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def berts(tmp_path_factory):
    root = tmp_path_factory.mktemp("berts")
    source = make_tiny_bert(root / "src_bert", source_vocab(), lowercase=True, seed=1)
    target = make_tiny_bert(root / "tgt_bert", target_vocab(), lowercase=False, seed=2)
    return str(source), str(target)


@pytest.fixture(scope="session")
def bert_nmt_data(tmp_path_factory, berts):
    """translation_bert data of the tiny bitext: source in the uncased tiny BERT's ids (the
    source BERT of CTNMT and BERT-fused), target in the cased one's."""
    root = tmp_path_factory.mktemp("bert_nmt")
    raw = make_tiny_bitext(root / "raw", n_train=120, pair="src-tgt")
    subprocess.run(["bash", REPO / "examples/data/bert_binarize.sh", raw, "src-tgt", "src", "tgt",
                    *berts, root / "bin", "translation_bert"],
                   check=True, env=BASE_ENV, capture_output=True, text=True)
    return root / "bin"


# ---------------------------------------------------------------------------------------------
# multilingual family: a gettext-shaped en-de/en-fr corpus from a tiny lexicon, prepared by
# examples/data/prepare_multilingual.py, with word dictionaries and AA monolingual text
# ---------------------------------------------------------------------------------------------
LEXICON = {"red": ("rot", "rouge"), "blue": ("blau", "bleu"), "file": ("Datei", "fichier"),
           "open": ("öffnen", "ouvrir"), "close": ("schließen", "fermer"),
           "new": ("neu", "nouveau"), "window": ("Fenster", "fenêtre"), "save": ("speichern",
                                                                                 "enregistrer")}


def write_gettext_like(root, seed=0):
    """A gettext-shaped corpus (en-de, en-fr, multi-way test) from the tiny lexicon."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def sentences(n):
        return [rng.sample(sorted(LEXICON), rng.randint(1, 4)) for _ in range(n)]

    for split, n in (("train", 60), ("valid", 10), ("test", 8)):
        for lang, column in (("de", 0), ("fr", 1)):
            rows = sentences(n)
            write(root / f"{split}.en-{lang}.en", "\n".join(" ".join(r) for r in rows) + "\n")
            write(root / f"{split}.en-{lang}.{lang}",
                  "\n".join(" ".join(LEXICON[w][column] for w in r) for r in rows) + "\n")
    rows = sentences(8)
    write(root / "test.multiway.en", "\n".join(" ".join(r) for r in rows) + "\n")
    for lang, column in (("de", 0), ("fr", 1)):
        write(root / f"test.multiway.{lang}",
              "\n".join(" ".join(LEXICON[w][column] for w in r) for r in rows) + "\n")


@pytest.fixture(scope="session")
def multi_data(tmp_path_factory):
    """(DATA dir of translation_multi_langtok, dir of en-de/en-fr/de-en word dictionaries)."""
    root = tmp_path_factory.mktemp("multi")
    write_gettext_like(root / "gettext")
    subprocess.run([sys.executable, REPO / "examples/data/prepare_multilingual.py",
                    root / "gettext", root / "data", "--langs", "de", "fr", "--vocab-size", "80"],
                   check=True, capture_output=True)
    (root / "dict").mkdir()
    write(root / "dict" / "en-de.txt", "".join(f"{w}\t{d}\n" for w, (d, _) in LEXICON.items()))
    write(root / "dict" / "en-fr.txt", "".join(f"{w}\t{f}\n" for w, (_, f) in LEXICON.items()))
    write(root / "dict" / "de-en.txt", "".join(f"{d}\t{w}\n" for w, (d, _) in LEXICON.items()))
    # mRASP2's aligned augmentation reads monolingual text: the German side of en-de
    write(root / "data" / "train.mono.de", (root / "data" / "train.en-de.de").read_text())
    return root / "data", root / "dict"


def multi_task(data, *extra, task="translation_multi_langtok"):
    return build_task([data, "--user-dir", PLUGIN, "--task", task, "--arch", "transformer",
                       "--cpu", *extra])[1]


# ---------------------------------------------------------------------------------------------
# speech family: an en-fr speech corpus synthesised with espeak-ng (examples/data/), its
# vocabulary and external MT, and a tiny random wav2vec 2.0 in fairseq's checkpoint format
# ---------------------------------------------------------------------------------------------
WORDS = {"red": "rouge", "blue": "bleu", "file": "fichier", "open": "ouvrir", "close": "fermer",
         "window": "fenêtre", "new": "nouveau", "save": "enregistrer", "green": "vert",
         "folder": "dossier", "copy": "copier", "paste": "coller"}
XSTNET_TRAIN_ARGS = [
    "--user-dir", PLUGIN, "--task", "xstnet", "--arch", "xstnet_tiny", "--cpu",
    "--criterion", "xstnet_multitask", "--label-smoothing", "0.1", "--optimizer", "adam",
    "--lr", "0.001", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
    "--max-tokens", "200000", "--max-tokens-text", "400", "--no-epoch-checkpoints",
    "--num-workers", "0", "--log-interval", "1", "--no-progress-bar", "--seed", "1",
    "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--shrink-channels", "32",
]


def write_text_corpus(directory, split, n, seed):
    rng = random.Random(seed)
    en, fr = [], []
    for _ in range(n):
        words = rng.sample(sorted(WORDS), rng.randint(1, 3))
        en.append(" ".join(words))
        fr.append(" ".join(WORDS[w] for w in words))
    write(directory / f"{split}.en-fr.en", "\n".join(en) + "\n")
    write(directory / f"{split}.en-fr.fr", "\n".join(fr) + "\n")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """DATA dir (manifests, wavs, spm, dict, config.yaml, train_mt.tsv) and a tiny wav2vec 2.0."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed: apt-get install espeak-ng (scripts/setup.sh does)")
    root = tmp_path_factory.mktemp("xstnet")
    text, data = root / "text", root / "st"
    text.mkdir()
    for split, n, seed in (("train", 24, 0), ("valid", 6, 1), ("test", 6, 2), ("extra", 60, 3)):
        write_text_corpus(text, split, n, seed)
    script = REPO / "examples" / "data"
    for split in ("train", "valid", "test"):
        subprocess.run([sys.executable, script / "synthesize_speech.py", text / f"{split}.en-fr",
                        "en", "fr", data, "--split", split], check=True, capture_output=True)
    subprocess.run([sys.executable, script / "prepare_speech_vocab.py", data, "--vocab-size", "60",
                    "--external-mt", text / "extra.en-fr", "--src", "en", "--tgt", "fr"],
                   check=True, capture_output=True)
    w2v = make_tiny_wav2vec2(root / "w2v.pt", embed_dim=32, extractor_mode="layer_norm",
                             conv_bias=True)
    return data, w2v


def xstnet_task(data, w2v, *extra):
    """(cfg, task) of the tiny XSTNet training command on ``data``."""
    return build_task([data, "--w2v-path", w2v, *XSTNET_TRAIN_ARGS, *extra])


CHIMERA_TRAIN_ARGS = [
    "--user-dir", PLUGIN, "--task", "chimera", "--arch", "chimera_tiny", "--cpu",
    "--criterion", "chimera_st_mt_contrastive", "--label-smoothing", "0.1", "--optimizer", "adam",
    "--lr", "0.001", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
    "--max-tokens", "200000", "--max-tokens-text", "400", "--no-epoch-checkpoints",
    "--num-workers", "0", "--log-interval", "1", "--no-progress-bar", "--seed", "1",
    "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--shrink-channels", "32", "--memory-slots", "8",
    "--memory-layers", "1",
]


def chimera_task(data, w2v, *extra):
    """(cfg, task) of the tiny Chimera training command on ``data``."""
    return build_task([data, "--w2v-path", w2v, *CHIMERA_TRAIN_ARGS, *extra])


def label_smoothed_mean(lprobs, target, pad, epsilon):
    """Label-smoothed CE per real token, written out: (1 - e - e') nll + e' sum_v -log p_v."""
    vocab = lprobs.size(-1)
    e_other = epsilon / (vocab - 1)
    real = target.ne(pad)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.sum(-1)
    per_token = (1 - epsilon - e_other) * nll + e_other * smooth
    return per_token[real].sum() / real.sum()


def copy_data(data, destination):
    shutil.copytree(data, destination)
    return destination


def rewrite_manifest(path, edit):
    """Apply ``edit(rows)`` to a manifest's rows (lists of fields) and write it back."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    edit(rows)
    write(path, "\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")


@pytest.fixture(scope="session")
def mass_data(tmp_path_factory, multi_data):
    """multi_data plus MASS's monolingual text, <split>.mono.{en,de} (the sides of en-de)."""
    data, dicts = multi_data
    root = tmp_path_factory.mktemp("mass") / "data"
    shutil.copytree(data, root)
    for split in ("train", "valid"):
        for lang in ("en", "de"):
            write(root / f"{split}.mono.{lang}", (data / f"{split}.en-de.{lang}").read_text())
    return root, dicts
