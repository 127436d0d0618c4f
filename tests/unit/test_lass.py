"""LaSS: magnitude pruning, the mask file, masked training with real Adam steps, one-direction
batches, zero-shot masks, materialised decoding and adding a language pair bit-identically."""
import json

import numpy as np
import pytest
import torch

import ptnmt_fairseq  # noqa: F401
from ptnmt_fairseq.lass.masks import (
    OUTPUT_PROJECTION, DirectionMask, MaskError, magnitude_mask, mask_path, masked_weight_names,
)
from conftest import PLUGIN, build_task

TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings", "--dropout", "0"]
DIRECTIONS = ["en-de", "de-en", "en-fr", "fr-en"]


def lass_task(data, mask_dir, *extra, pairs="en-de,de-en,en-fr,fr-en"):
    cfg, task = build_task([data, "--user-dir", PLUGIN, "--task", "translation_lass", "--cpu",
                            "--arch", "transformer_lass", "--lass-mask-dir", mask_dir,
                            "--lang-pairs", pairs, "--optimizer", "adam", "--lr", "0.01",
                            "--criterion", "cross_entropy", *TINY, *extra])
    return cfg, task


@pytest.fixture(scope="module")
def masks(multi_data, tmp_path_factory):
    """Masks (alpha 0.5) of four directions, from four random 'fine-tuned' copies of a model."""
    data, _ = multi_data
    mask_dir = tmp_path_factory.mktemp("masks")
    _, task = build_task([data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok",
                          "--arch", "transformer", "--cpu", *TINY])
    torch.manual_seed(0)
    state = task.build_model(build_task([data, "--user-dir", PLUGIN, "--task",
                                         "translation_multi_langtok", "--arch", "transformer",
                                         "--cpu", *TINY])[0].model).state_dict()
    for direction in DIRECTIONS:
        finetuned = {k: v + 0.05 * torch.randn_like(v) for k, v in state.items()}
        DirectionMask.from_state_dict(direction, finetuned, 0.5, "test").save(
            mask_path(mask_dir, direction))
    return mask_dir


def lass_model(data, mask_dir, *extra, pairs="en-de,de-en,en-fr,fr-en", seed=1):
    cfg, task = lass_task(data, mask_dir, *extra, pairs=pairs)
    torch.manual_seed(seed)
    return cfg, task, task.build_model(cfg.model)


def first_batch(task, direction, n=4):
    src, tgt = direction.split("-")
    dataset = task.direction("train", src, tgt, training=False)
    batch = dataset.collater([dataset[i] for i in range(n)])
    batch["direction"] = direction
    return batch


def test_magnitude_pruning_keeps_exactly_the_largest_weights():
    weight = torch.tensor([[0.1, -0.9, 0.3], [-0.2, 0.5, 0.0]])
    assert magnitude_mask(weight, 0.5).tolist() == [[False, True, True], [False, True, False]]
    ties = torch.ones(10, 10)  # all |w| equal: the kept count is still exact, earlier first
    for alpha in (0.0, 0.1, 0.25, 0.7, 0.99):
        kept = magnitude_mask(ties, alpha).flatten()
        assert int(kept.sum()) == 100 - int(alpha * 100)
        assert kept[:100 - int(alpha * 100)].all()
    weight = torch.randn(37, 53)
    mask = magnitude_mask(weight, 0.3)
    assert int(mask.sum()) == 37 * 53 - int(0.3 * 37 * 53)
    assert weight.abs()[mask].min() >= weight.abs()[~mask].max()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        magnitude_mask(weight, 1.0)


def test_masked_tensors_are_the_linear_weights_output_projection_optional():
    shapes = {"encoder.embed_tokens.weight": (9, 4), "encoder.layers.0.fc1.weight": (8, 4),
              "encoder.layers.0.fc1.bias": (8,),
              "encoder.layers.0.self_attn_layer_norm.weight": (4,),
              "decoder.embed_positions.weight": (5, 4), OUTPUT_PROJECTION: (9, 4)}
    assert masked_weight_names(shapes) == [OUTPUT_PROJECTION, "encoder.layers.0.fc1.weight"]
    assert masked_weight_names(shapes, shared_output_projection=True) == [
        "encoder.layers.0.fc1.weight"]


def test_mask_file_round_trips_bit_packed_and_versioned(tmp_path):
    masks = {"a.weight": torch.rand(7, 13) > 0.5, "b.weight": torch.rand(3, 3) > 0.5}
    path = tmp_path / "de-en.mask.npz"
    DirectionMask("de-en", masks, 0.5, "ft.pt").save(path)
    back = DirectionMask.load(path, "de-en")
    assert back.alpha == 0.5 and back.source == "ft.pt"
    assert all(torch.equal(back.masks[k], masks[k]) for k in masks)
    with np.load(path) as npz:
        header = json.loads(npz["header"].tobytes())
        assert npz["bits"].nbytes == (7 * 13 + 9 + 7) // 8  # 8 weights per byte
    assert header["format"] == "ptnmt-lass-mask" and header["version"] == 1
    assert [t["name"] for t in header["tensors"]] == ["a.weight", "b.weight"]
    assert header["tensors"][0]["shape"] == [7, 13]
    with pytest.raises(MaskError, match="holds the mask of de-en, not fr-en"):
        DirectionMask.load(path, "fr-en")
    header["tensors"][1]["kept"] += 1  # a damaged file: the bits disagree with the header
    with open(tmp_path / "bad.mask.npz", "wb") as out:
        np.savez(out, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                 bits=np.load(path)["bits"])
    with pytest.raises(MaskError, match=r"tensor b.weight keeps \d+ weights, its header says "
                                        r"\d+ \(a damaged file\)"):
        DirectionMask.load(tmp_path / "bad.mask.npz")
    with open(tmp_path / "short.mask.npz", "wb") as out:
        np.savez(out, header=np.load(path)["header"], bits=np.load(path)["bits"][:-1])
    with pytest.raises(MaskError, match="12 bytes of mask bits for 100 weights"):
        DirectionMask.load(tmp_path / "short.mask.npz")
    (tmp_path / "junk.mask.npz").write_bytes(b"not a mask")
    with pytest.raises(MaskError, match="junk.mask.npz is not a LaSS mask file"):
        DirectionMask.load(tmp_path / "junk.mask.npz")


def test_a_mask_that_does_not_fit_the_model_is_refused_naming_direction_and_tensor(
        multi_data, masks, tmp_path):
    data, _ = multi_data
    good = DirectionMask.load(mask_path(masks, "de-en"))
    name = "encoder.layers.0.fc1.weight"
    for case, edit, message in [
        ("shape", lambda m: m.update({name: torch.ones(3, 3, dtype=torch.bool)}),
         rf"LaSS mask of de-en \(.*de-en.mask.npz\): tensor {name} is \(3, 3\) in the mask but "
         r"\(32, 16\) in the model"),
        ("missing", lambda m: m.pop(name), rf"has no mask for tensor {name}"),
    ]:
        broken = tmp_path / case
        for direction in DIRECTIONS:
            mask = DirectionMask.load(mask_path(masks, direction))
            if direction == "de-en":
                edit(mask.masks)
            mask.save(mask_path(broken, direction))
        with pytest.raises(MaskError, match=message):
            lass_model(data, broken)
    with pytest.raises(MaskError, match=rf"masks tensor {OUTPUT_PROJECTION}.*"
                                        "--lass-shared-output-projection differs"):
        lass_model(data, masks, "--lass-shared-output-projection")
    assert good.masks[name].shape == (32, 16)


def test_gradients_and_adam_updates_stay_inside_the_batch_direction_mask(multi_data, masks):
    """Real fairseq Adam steps through task.train_step: first de-en (momentum builds up), then
    en-fr. Weights outside en-fr's mask get zero gradient and do not move in its steps; without
    the guard, Adam's de-en momentum moves them (the control: the test can fail)."""
    from fairseq import optim

    data, _ = multi_data
    cfg, task, model = lass_model(data, masks)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters()
                                                      if p.requires_grad])
    name = "decoder.layers.0.fc1.weight"
    weight = model.masked_modules[name].weight
    de_en, en_fr = model.mask("de-en").masks[name], model.mask("en-fr").masks[name]
    for step in range(3):
        optimizer.zero_grad()
        task.train_step(first_batch(task, "de-en"), model, criterion, optimizer, step)
        optimizer.step()
    optimizer.zero_grad()
    before = weight.detach().clone()
    task.train_step(first_batch(task, "en-fr"), model, criterion, optimizer, 3)
    assert weight.grad[~en_fr].abs().max() == 0 and weight.grad[en_fr].abs().max() > 0
    untied = {n: m.weight for n, m in model.masked_modules.items() if n != OUTPUT_PROJECTION}
    all_before = {n: w.detach().clone() for n, w in untied.items()}
    optimizer.step()
    for n, w in untied.items():  # every masked matrix: not moved by momentum outside the mask
        outside_n = ~model.mask("en-fr").masks[n]
        assert torch.equal(w.detach()[outside_n], all_before[n][outside_n]), n
    outside = ~en_fr
    assert not torch.equal(weight.detach()[en_fr], before[en_fr])
    # control: the same step without the guard moves weights outside en-fr's mask (Adam
    # momentum of de-en), which is what the guard prevents
    task.guard.attached = optimizer.optimizer  # keep the hooks, but make them no-ops
    task.guard.before_step, task.guard.after_step = (lambda: None), (lambda: None)
    optimizer.zero_grad()
    before = weight.detach().clone()
    task.train_step(first_batch(task, "en-fr"), model, criterion, optimizer, 4)
    optimizer.step()
    moved = ~torch.isclose(weight.detach(), before, rtol=0, atol=0)
    assert (moved & outside & de_en).any()


def test_training_batches_hold_one_direction_each(multi_data, masks):
    data, _ = multi_data
    cfg, task, _ = lass_model(data, masks)
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=150, seed=1)
    seen = set()
    for batch in iterator.next_epoch_itr(shuffle=True):
        first = batch["net_input"]["prev_output_tokens"][:, 0].unique()
        assert first.numel() == 1  # one target-language tag
        tgt = task.dictionary[int(first)]
        assert tgt == f"LANG_TOK_{batch['direction'].split('-')[1].upper()}"
        seen.add(batch["direction"])
    assert seen == set(DIRECTIONS)
    # validation reads batches in order and may stop early: every direction comes first
    task.load_dataset("valid")
    valid = task.get_batch_iterator(task.dataset("valid"), max_tokens=150, seed=1)
    first = [b["direction"] for b, _ in zip(valid.next_epoch_itr(shuffle=False), DIRECTIONS)]
    assert sorted(first) == sorted(DIRECTIONS)


def test_zero_shot_combines_encoder_of_x_en_with_decoder_of_en_y(multi_data, masks):
    data, _ = multi_data
    _, _, model = lass_model(data, masks)
    zero = model.mask("de-fr")
    for name, mask in zero.masks.items():
        side = "de-en" if name.startswith("encoder.") else "en-fr"
        assert torch.equal(mask, model.mask(side).masks[name]), name
    with pytest.raises(MaskError, match=r"no LaSS mask for direction de-fr: .*de-fr.mask.npz "
                                        r"does not exist \(a trained or protected direction"):
        lass_model(data, masks, pairs="de-fr")  # zero-shot masks are for decoding only
    with pytest.raises(MaskError, match=r"no LaSS mask for direction fr-ro: .*fr-ro.mask.npz "
                                        r"does not exist, nor does the zero-shot pair "
                                        r"fr-en.mask.npz \+ en-ro.mask.npz"):
        model.mask("fr-ro")


def test_materialised_decoding_equals_the_masked_forward_and_keeps_embeddings_dense(
        multi_data, masks):
    data, _ = multi_data
    _, task, model = lass_model(data, masks)
    model.eval()
    batch = first_batch(task, "de-en")
    with torch.no_grad(), model.masked("de-en"):
        masked = model(**batch["net_input"])[0]
    with pytest.raises(RuntimeError, match="one direction's sub-network"):
        model(**batch["net_input"])
    embedding = model.encoder.embed_tokens.weight.detach().clone()
    model.materialise("de-en")
    with torch.no_grad():
        fast = model(**batch["net_input"])[0]
    assert torch.equal(fast, masked)
    assert torch.equal(model.encoder.embed_tokens.weight, embedding)  # the lookup stays dense
    projection = model.decoder.output_projection.weight
    assert (projection == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    model.materialise("en-fr")  # another direction, from the dense weights kept aside
    assert torch.equal(model.masked_modules[OUTPUT_PROJECTION].weight != 0,
                       model.mask("en-fr").masks[OUTPUT_PROJECTION] & (embedding != 0))


def test_adding_a_pair_leaves_the_protected_directions_bit_identical(multi_data, masks):
    from fairseq import optim

    data, _ = multi_data
    cfg, task, model = lass_model(data, masks, "--lass-protected-pairs", "en-de,de-en,fr-en",
                                  pairs="en-fr")
    assert not model.encoder.embed_tokens.weight.requires_grad
    assert not model.encoder.layers[0].fc1.bias.requires_grad
    model.eval()
    batches = {d: first_batch(task, d) for d in DIRECTIONS}

    def outputs():
        with torch.no_grad():
            out = {}
            for d, batch in batches.items():
                with model.masked(d):
                    out[d] = model(**batch["net_input"])[0]
            return out

    before = outputs()
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters()
                                                      if p.requires_grad])
    model.train()
    for step in range(3):
        optimizer.zero_grad()
        task.train_step(batches["en-fr"], model, criterion, optimizer, step)
        optimizer.step()
    model.eval()
    after = outputs()
    for direction in ("en-de", "de-en", "fr-en"):
        assert torch.equal(after[direction], before[direction]), direction
    assert not torch.equal(after["en-fr"], before["en-fr"])  # the new pair did learn
    with pytest.raises(ValueError, match=r"protected-pairs \['en-fr'\] are also trained"):
        lass_model(data, masks, "--lass-protected-pairs", "en-fr", pairs="en-fr")


def test_a_new_pair_whose_mask_lies_inside_the_protected_ones_is_refused(multi_data, masks,
                                                                          tmp_path):
    data, _ = multi_data
    for direction in DIRECTIONS:  # en-fr's sub-network: de-en's, so it owns no weight
        source = DirectionMask.load(
            mask_path(masks, "de-en" if direction == "en-fr" else direction))
        DirectionMask(direction, source.masks, source.alpha).save(mask_path(tmp_path, direction))
    with pytest.raises(ValueError, match=r"en-fr: every weight of their masks is in a protected "
                                         r"direction's mask \(de-en\), so nothing would train"):
        lass_model(data, tmp_path, "--lass-protected-pairs", "de-en", pairs="en-fr")
