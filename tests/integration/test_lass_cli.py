"""LaSS through the CLIs: multilingual base, fine-tuning, find_masks, masked training under
two-rank DDP, generation with the direction's mask (fairseq-generate, fairseq-interactive, the
hub interface) and the error for a direction without a mask."""
import json
import subprocess
import sys

import pytest
import torch

import ptnmt_fairseq  # noqa: F401

ARCH = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings"]


def train_args(data, save, task, arch, pairs, updates, *extra):
    from conftest import PLUGIN

    return [data, "--user-dir", PLUGIN, "--task", task, "--arch", arch, *ARCH, "--cpu",
            "--lang-pairs", pairs, "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", "400", "--max-update", str(updates), "--save-dir", save,
            "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar",
            "--log-interval", "1", *extra]


def test_lass_pipeline_cli_two_rank_ddp(multi_data, tmp_path):
    from conftest import (
        PLUGIN, hub_translate, interactive, num_updates, outputs, run_cli, run_ddp,
    )
    from ptnmt_fairseq.lass.masks import DirectionMask, mask_path

    data, _ = multi_data
    base, ft, masks, lass = (tmp_path / n for n in ("base", "ft.de-en", "masks", "lass"))
    run_cli("fairseq-train", train_args(data, base, "translation_multi_langtok", "transformer",
                                        "en-de,de-en", 4))
    run_cli("fairseq-train", train_args(data, ft, "translation_multi_langtok", "transformer",
                                        "de-en", 2, "--finetune-from-model",
                                        base / "checkpoint_last.pt"))
    found = subprocess.run(
        [sys.executable, "-m", "ptnmt_fairseq.lass.find_masks", "--alpha", "0.4", "--out", masks,
         f"en-de={base / 'checkpoint_last.pt'}", f"de-en={ft / 'checkpoint_last.pt'}"],
        capture_output=True, text=True, check=True)
    reports = [json.loads(line) for line in found.stdout.splitlines()]
    assert [r["direction"] for r in reports] == ["en-de", "de-en"]
    assert all(abs(r["kept"] - 0.6) < 0.001 for r in reports)

    # masked training on two ranks (each may hold another direction in a step), from the base
    logs = run_ddp(train_args(data, lass, "translation_lass", "transformer_lass", "en-de,de-en", 3,
                              "--lass-mask-dir", masks, "--finetune-from-model",
                              base / "checkpoint_last.pt"))
    assert "distributed init (rank 1)" in logs[1] and num_updates(logs[0]) == 3
    before = torch.load(base / "checkpoint_last.pt", weights_only=False)["model"]
    after = torch.load(lass / "checkpoint_last.pt", weights_only=False)["model"]
    union = {k: DirectionMask.load(mask_path(masks, "en-de")).masks[k]
             | DirectionMask.load(mask_path(masks, "de-en")).masks[k]
             for k in DirectionMask.load(mask_path(masks, "en-de")).masks}
    moved = 0
    for name, inside in union.items():  # outside both masks nothing moved, Adam or not
        if name == "decoder.output_projection.weight":  # tied to the shared embeddings: dense
            continue
        assert torch.equal(after[name][~inside], before[name][~inside]), name
        moved += int((after[name][inside] != before[name][inside]).sum())
    assert moved > 0
    resumed = run_cli("fairseq-train", train_args(  # from checkpoint_last.pt, masks found again
        data, lass, "translation_lass", "transformer_lass", "en-de,de-en", 4,
        "--lass-mask-dir", masks))
    assert "Loaded checkpoint" in resumed.stdout + resumed.stderr
    assert num_updates(resumed.stdout + resumed.stderr) == 4

    checkpoint = lass / "checkpoint_last.pt"
    gen = run_cli("fairseq-generate", [
        data, "--user-dir", PLUGIN, "--task", "translation_lass", "-s", "de", "-t", "en", "--cpu",
        "--path", checkpoint, "--gen-subset", "test", "--beam", "2", "--max-len-b", "8",
        "--max-tokens", "400", "--scoring", "sacrebleu"])
    assert "LaSS: decoding de-en with 60.0% of the masked weights" in gen.stderr
    generated = outputs(gen.stdout)
    assert len(generated) == 8 and "BLEU" in gen.stdout + gen.stderr
    raw = (data / "test.de-en.de").read_text(encoding="utf-8").split("\n")[:8]
    inter = interactive(data, checkpoint, raw, extra=["--task", "translation_lass", "-s", "de",
                                                      "-t", "en", "--max-len-b", "8"])
    assert outputs(inter.stdout) == generated
    hub = hub_translate(checkpoint, data, raw, source_lang="de", target_lang="en", max_len_b=8)
    assert hub == [generated[i] for i in range(8)]

    with pytest.raises(Exception) as missing:  # the task refuses to load the model for de-fr
        hub_translate(checkpoint, data, raw, source_lang="de", target_lang="fr")
    assert f"no LaSS mask for direction de-fr: {masks / 'de-fr.mask.npz'} does not exist, " \
           "nor does the zero-shot pair de-en.mask.npz + en-fr.mask.npz" in str(missing.value)
