"""mRASP / mRASP2 through the CLIs: training with RAS, zero-shot generation, retrieval, and
mRASP2 (RAS + aligned augmentation + contrastive loss) under two-rank DDP."""
import re

import pytest

import ptnmt_fairseq  # noqa: F401

TINY_TRANSFORMER = ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
                    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
                    "--share-all-embeddings"]


def test_multilingual_training_and_zero_shot_generation_cli(multi_data, tmp_path):
    from conftest import PLUGIN, hub_translate, interactive, num_updates, outputs, run_cli

    data, dicts = multi_data
    out = run_cli("fairseq-train", [
        data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok", "--cpu",
        "--lang-pairs", "en-de,de-en,en-fr,fr-en", "--ras-prob", "0.3",
        "--ras-dicts", f"{dicts}/en-de.txt,{dicts}/en-fr.txt",
        "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
        "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--share-all-embeddings", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "1e-3",
        "--max-tokens", "400", "--max-update", "4", "--save-dir", tmp_path,
        "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar", "--log-interval", "1"])
    log = out.stdout + out.stderr
    assert num_updates(log) == 4 and "sampling ratios (T=2.0)" in log
    gen = run_cli("fairseq-generate", [
        data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok", "-s", "de", "-t", "fr",
        "--cpu", "--path", tmp_path / "checkpoint_last.pt", "--gen-subset", "test",
        "--beam", "2", "--max-len-b", "8", "--max-tokens", "400", "--scoring", "sacrebleu"])
    sources = [l for l in gen.stdout.splitlines() if l.startswith("S-")]
    assert len(sources) == 8 and all("\tLANG_TOK_DE " in l for l in sources)
    assert not any("LANG_TOK" in l for l in gen.stdout.splitlines() if l.startswith("D-"))
    assert "BLEU" in (gen.stdout + gen.stderr)
    # the same sentences through fairseq-interactive and the hub interface: the same output
    generated = outputs(gen.stdout)
    raw = (data / "test.de-fr.de").read_text(encoding="utf-8").split("\n")[:8]
    inter = interactive(data, tmp_path / "checkpoint_last.pt", raw, extra=[
        "--task", "translation_multi_langtok", "-s", "de", "-t", "fr", "--max-len-b", "8"])
    assert outputs(inter.stdout) == generated
    hub = hub_translate(tmp_path / "checkpoint_last.pt", data, raw, source_lang="de",
                        target_lang="fr", max_len_b=8)
    assert hub == [generated[i] for i in range(8)]
    no_direction = interactive(data, tmp_path / "checkpoint_last.pt", raw[:1], check=False,
                               extra=["--task", "translation_multi_langtok"])
    assert no_direction.returncode != 0 and "pass -s SRC -t TGT" in no_direction.stderr
    # sentence retrieval on the multi-way test set, through the module's command line
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ptnmt_fairseq.mrasp2.retrieval", data,
                          "--path", tmp_path / "checkpoint_last.pt", "--langs", "en", "de", "fr"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["pairs"]) == {"en-de", "en-fr", "de-en", "de-fr", "fr-en", "fr-de"}
    assert result["retrieval_acc"] == pytest.approx(sum(result["pairs"].values()) / 6, abs=0.02)


def test_mrasp2_two_rank_ddp_with_ras_and_contrastive_loss(multi_data, tmp_path):
    import re

    from conftest import PLUGIN, num_updates, run_ddp

    data, dicts = multi_data
    outputs = run_ddp([
        data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok_aa", "--cpu",
        "--lang-pairs", "en-de,de-en,en-fr,fr-en", "--ras-prob", "0.3", "--mono-langs", "de",
        "--ras-dicts", f"{dicts}/en-de.txt,{dicts}/en-fr.txt,{dicts}/de-en.txt", *TINY_TRANSFORMER,
        "--criterion", "label_smoothed_cross_entropy_with_contrastive", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "400", "--max-update", "3",
        "--save-dir", tmp_path, "--no-epoch-checkpoints", "--num-workers", "0",
        "--no-progress-bar", "--log-interval", "1"])
    assert "distributed init (rank 1)" in outputs[1]
    assert num_updates(outputs[0]) == 3
    assert re.search(r"sampling ratios .*de-de \(AA\) 0\.\d+", outputs[0])  # AA in the mix
    values = [float(v) for v in re.findall(r"contrastive_loss[=\s]+([\d.]+)", outputs[0])]
    assert values and all(v > 0 for v in values)



def test_a_valid_sentence_longer_than_max_tokens_through_fairseq_train(multi_data, tmp_path):
    from conftest import PLUGIN, num_updates, run_cli

    data, _ = multi_data
    args = [data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok", "--cpu",
            "--lang-pairs", "en-de", *TINY_TRANSFORMER, "--criterion", "cross_entropy",
            "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "5", "--max-update", "2",
            "--save-dir", tmp_path, "--no-save", "--num-workers", "0", "--no-progress-bar"]
    failed = run_cli("fairseq-train", args, check=False)
    assert failed.returncode != 0 and "AssertionError" not in failed.stderr
    assert re.search(r"valid: sentence \d+ has \d+ tokens, more than --max-tokens 5: pass "
                     r"--skip-invalid-size-inputs-valid-test", failed.stderr)
    skipped = run_cli("fairseq-train", args + ["--skip-invalid-size-inputs-valid-test"])
    log = skipped.stdout + skipped.stderr
    assert num_updates(log) == 2
    assert "samples have invalid sizes and will be skipped" in log  # training: fairseq's own
    assert re.search(r"valid: skipped \d+ sentences longer than --max-tokens 5", log)
