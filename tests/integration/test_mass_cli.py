"""MASS and CSP through the CLIs: pre-training, CSP pre-training, supervised
fine-tuning with fairseq-generate, fairseq-interactive and the hub interface agreeing, and
unsupervised fine-tuning by back-translation under two-rank DDP."""
from conftest import (
    PLUGIN, hub_translate, interactive, num_updates, outputs, run_cli, run_ddp,
)

MODEL = ["--arch", "mass_tiny", "--encoder-layers", "1", "--decoder-layers", "1",
         "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
         "--decoder-attention-heads", "2"]


def mass_train(data, save, *extra):
    return [data, "--user-dir", PLUGIN, "--task", "mass", "--cpu", *MODEL,
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "4", "--max-tokens", "400", "--save-dir", save, "--seed", "1",
            "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar",
            "--log-interval", "1", *extra]


def test_pretrain_finetune_generate_and_back_translate(mass_data, tmp_path):
    data, dicts = mass_data
    pre = tmp_path / "pre"
    out = run_cli("fairseq-train", mass_train(data, pre, "--mono-langs", "en,de",
                                              "--max-update", "4"))
    assert num_updates(out.stdout + out.stderr) == 4

    csp = run_cli("fairseq-train", mass_train(
        data, tmp_path / "csp", "--mono-langs", "en,de", "--mono-objective", "csp",
        "--ras-dicts", f"{dicts}/en-de.txt,{dicts}/de-en.txt", "--max-update", "2"))
    assert "CSP lexicon en->de covers 100.0% of the words" in csp.stdout + csp.stderr

    ft = tmp_path / "ft"
    run_cli("fairseq-train", mass_train(data, ft, "--lang-pairs", "en-de", "--max-update", "4",
                                        "--finetune-from-model", pre / "checkpoint_best.pt"))
    gen = run_cli("fairseq-generate", [
        data, "--user-dir", PLUGIN, "--task", "mass", "-s", "en", "-t", "de", "--cpu",
        "--path", ft / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
        "--max-len-b", "8", "--max-tokens", "400", "--scoring", "sacrebleu"])
    generated = outputs(gen.stdout)
    assert len(generated) == 8 and "BLEU" in gen.stdout + gen.stderr
    raw = (data / "test.en-de.en").read_text(encoding="utf-8").split("\n")[:8]
    inter = interactive(data, ft / "checkpoint_last.pt", raw, extra=[
        "--task", "mass", "-s", "en", "-t", "de", "--max-len-b", "8"])
    assert outputs(inter.stdout) == generated
    hub = hub_translate(ft / "checkpoint_last.pt", data, raw, source_lang="en", target_lang="de",
                        max_len_b=8)
    assert hub == [generated[i] for i in range(8)]

    # Unsupervised: back-translation only, the two ranks each generating with the wrapped model.
    ranks = run_ddp(mass_train(data, tmp_path / "bt", "--mono-langs", "en,de", "--mono-objective",
                               "back_translation", "--lang-pairs", "en-de,de-en",
                               "--max-update", "3", "--finetune-from-model",
                               pre / "checkpoint_best.pt"))
    assert "distributed init (rank 1)" in ranks[1] and num_updates(ranks[0]) == 3
    assert "valid on 'valid' subset" in ranks[0]
