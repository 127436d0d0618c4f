"""examples/data/pretrain_bert.sh: a small MLM-pretrained BERT per language from the gettext-shaped
corpus, loaded through the suite's own BERT loading code with its MLM head."""
import re
import subprocess
import sys

from conftest import BASE_ENV, REPO, write_gettext_like
from ptnmt_fairseq.common.bert import pretrained


def test_pretrain_bert_learns_and_loads_with_its_mlm_head(tmp_path):
    write_gettext_like(tmp_path / "gettext")
    env = dict(BASE_ENV, PYTHON=sys.executable, VOCAB_SIZE="60", LAYERS="1", HIDDEN="32",
               HEADS="2", INTERMEDIATE="64", STEPS="200", BATCH_SIZE="16", LR="2e-3")
    out = subprocess.run(["bash", REPO / "examples/data/pretrain_bert.sh", tmp_path / "gettext",
                          tmp_path / "bert", "de", "en"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    for lang in ("de", "en"):
        log = (tmp_path / "bert" / lang / "train.log").read_text()
        losses = [float(x) for x in re.findall(r"mlm_loss ([\d.]+)", log)]
        assert len(losses) == 4 and losses[-1] < losses[0] - 0.5, losses  # it learns
        masked_lm, fresh = pretrained.load_masked_lm(str(tmp_path / "bert" / lang))
        assert fresh == []  # the MLM head was saved and is loaded, not created fresh
        vocab = pretrained.bert_vocab_file(str(tmp_path / "bert" / lang)).read_text().splitlines()
        assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        assert masked_lm.config.vocab_size == len(vocab)
    # the German BERT saw German text only: its vocabulary has the lexicon's German words
    german = set((tmp_path / "bert" / "de" / "vocab.txt").read_text().split())
    assert {"fenster", "datei"} & {w.lower() for w in german}
    missing = subprocess.run(["bash", REPO / "examples/data/pretrain_bert.sh", tmp_path / "gettext",
                              tmp_path / "bert", "ro"], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "no ro training text" in missing.stderr
