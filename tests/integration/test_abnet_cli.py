"""AB-Net (Guo et al., NeurIPS 2020) through the CLIs: freezing, length token, Mask-Predict
decoding, vocabulary checks, resume and two-rank DDP, with two tiny BERTs of different
vocabularies (``conftest.berts``) and once with the packaged MiniLM."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ptnmt_fairseq  # noqa: F401
from ptnmt_fairseq.abnet.modules import EncoderAdapter
from conftest import (
    BASE_ENV, REPO, generate, hub_translate, hypotheses, interactive,
    num_updates, outputs, run_cli, run_ddp, train, train_args,
)

BINARIZE = str(REPO / "examples/data/bert_binarize.sh")


def binarize(raw, berts, out, task="translation_abnet", src="src", tgt="tgt"):
    subprocess.run(["bash", BINARIZE, str(raw), f"{src}-{tgt}", src, tgt, *berts, str(out), task],
                   check=True, env=BASE_ENV, capture_output=True, text=True)
    return Path(out)


@pytest.fixture(scope="module")
def abnet_data(bert_nmt_data):
    """translation_abnet reads translation_bert's binaries: the shared tiny BERT data."""
    return bert_nmt_data


def abnet_args(berts, arch="abnet_tiny", extra=()):
    return [
        "--task", "translation_abnet", "--arch", arch,
        "--source-bert", berts[0], "--target-bert", berts[1],
        "--criterion", "nat_loss", "--label-smoothing", "0.1", "--lr", "0.002",
        "--fixed-validation-seed", "7", *extra,
    ]


@pytest.fixture(scope="module")
def trained_abnet(abnet_data, berts, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("abnet_ckpt")
    out = train(abnet_data, save_dir, model_args=[], extra=abnet_args(berts, extra=[
        "--max-update", "30"]))
    return save_dir, out.stdout + out.stderr


def first_batch(task, split, n):
    """The first ``n`` sentences of ``split``, collated as fairseq would batch them."""
    task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(n)])


def load_trained(path):
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    return models[0], cfg, task


# ---------------------------------------------------------------------------------------------
# model behaviour on the real (CLI-trained) model
# ---------------------------------------------------------------------------------------------
def test_frozen_berts_are_bit_identical_and_adapters_train(trained_abnet, berts):
    from transformers import BertForMaskedLM, BertModel

    save_dir, log = trained_abnet
    assert "AB-Net:" in log and "trainable parameters of" in log
    model, _, _ = load_trained(save_dir / "checkpoint_last.pt")
    x_bert = BertModel.from_pretrained(berts[0], add_pooling_layer=False)
    y_bert = BertForMaskedLM.from_pretrained(berts[1])
    for name, ref in x_bert.state_dict().items():
        assert torch.equal(model.encoder.bert.bert.state_dict()[name], ref), name
    for name, ref in y_bert.bert.state_dict().items():
        if "pooler" not in name:
            assert torch.equal(model.decoder.bert.bert.state_dict()[name], ref), name
    fresh = EncoderAdapter(32, 64)
    assert not torch.equal(model.encoder.bert.adapters["0"].layer_norm.weight,
                           fresh.layer_norm.weight)  # LN weight starts at ones: it moved


def test_no_gradient_reaches_bert_weights(trained_abnet):
    model, cfg, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    from ptnmt_fairseq.abnet.encoder import freeze_berts

    freeze_berts(model, finetune=False)
    model.train()
    batch = first_batch(task, "valid", 4)
    criterion = task.build_criterion(cfg.criterion)

    class Backward:  # fairseq's train_step calls optimizer.backward(loss)
        @staticmethod
        def backward(loss):
            loss.backward()

    task.train_step(batch, model, criterion, Backward(), update_num=0)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".bert.bert." in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "adapters" in n)
    assert grads["encoder.embed_lengths.weight"].abs().sum() > 0


def test_finetune_bert_trains_the_berts(abnet_data, berts, tmp_path):
    from transformers import BertModel

    train(abnet_data, tmp_path, model_args=[], extra=abnet_args(berts, extra=[
        "--max-update", "2", "--finetune-bert"]))
    model, _, _ = load_trained(tmp_path / "checkpoint_last.pt")
    x_bert = BertModel.from_pretrained(berts[0], add_pooling_layer=False)
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(model.encoder.bert.bert.state_dict()[name], x_bert.state_dict()[name])


def test_length_token_and_length_loss(trained_abnet):
    model, cfg, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    model.eval()
    batch = first_batch(task, "valid", 3)
    net = batch["net_input"]
    out = model(net["src_tokens"], net["src_lengths"], task.inject_noise(batch["target"]),
                batch["target"])
    length = out["length"]
    assert length["out"].shape == (3, 256)  # abnet_tiny: 256 length classes
    assert torch.isinf(length["out"][:, 0]).all()  # an empty target is impossible
    assert length["tgt"].tolist() == batch["target"].ne(task.tgt_dict.pad()).sum(1).tolist()
    assert length["factor"] == pytest.approx(0.1)
    # nat_loss adds factor * mean NLL of the true length
    criterion = task.build_criterion(cfg.criterion)
    _, _, log = criterion(model, {**batch, "prev_target": task.inject_noise(batch["target"])})
    lprobs = F.log_softmax(length["out"].float(), -1)
    expected = -lprobs.gather(1, length["tgt"][:, None]).mean() * 0.1
    assert log["length-loss"] == pytest.approx(float(expected) / 0.1, abs=1e-4)  # logged /factor
    # word loss only on [MASK] positions of prev_target
    prev = task.inject_noise(batch["target"])
    out = model(net["src_tokens"], net["src_lengths"], prev, batch["target"])
    masks = prev.eq(task.tgt_dict.mask())
    word = out["word_ins"]  # the MLM head ran on the [MASK] slots only: N_masked x V
    assert word["out"].shape == (int(masks.sum()), len(task.tgt_dict))
    assert torch.equal(word["tgt"], batch["target"][masks])
    full = model.decoder.mlm_head(model.decoder.extract_features(prev, model.encoder(
        net["src_tokens"], src_lengths=net["src_lengths"])))  # B x T x V, every slot
    assert torch.allclose(word["out"], full[masks], atol=1e-5)
    lprobs = F.log_softmax(full[masks].float(), -1)  # nat_loss on the slots, label smoothing 0.1
    nll = -lprobs.gather(1, batch["target"][masks][:, None]).mean()
    by_hand = 0.9 * nll - 0.1 * lprobs.mean()
    word_loss = criterion._compute_loss(word["out"], word["tgt"], word["mask"], 0.1)["loss"]
    assert float(word_loss) == pytest.approx(float(by_hand), abs=1e-4)
    assert abs(float(criterion._compute_loss(length["out"], length["tgt"], factor=0.1)["loss"])
               - float(expected)) < 1e-4


def test_source_encodes_the_same_alone_and_padded(trained_abnet):
    model, _, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    model.eval()
    d = task.src_dict
    sent = torch.tensor([[d.bos(), d.index("a"), d.index("b"), d.eos()]])
    alone = model.encoder(sent)["encoder_out"][0][:, 0]
    right = torch.cat([sent, torch.full((1, 3), d.pad())], 1)
    left = torch.cat([torch.full((1, 3), d.pad()), sent], 1)
    assert torch.allclose(model.encoder(right)["encoder_out"][0][:4, 0], alone, atol=1e-5)
    assert torch.allclose(model.encoder(left)["encoder_out"][0][3:, 0], alone, atol=1e-5)


def forced_lengths(model, task, preferred):
    """The trained model on 2 test sentences, its length predictor forced to prefer the canvas
    lengths ``preferred`` in that order; returns (encoder_out, src_tokens)."""
    sample = first_batch(task, "test", 2)
    src_tokens = sample["net_input"]["src_tokens"]
    encoder_out = model.forward_encoder([src_tokens, sample["net_input"]["src_lengths"]])
    lprobs = torch.full((2, model.args.max_length_classes), -9.0)
    lprobs[:, preferred] = -torch.arange(1.0, len(preferred) + 1)
    model.decoder.forward_length = lambda normalize, encoder_out: lprobs
    return encoder_out, src_tokens


def canvas_lengths(decoder_out, pad):
    return decoder_out.output_tokens.ne(pad).sum(1).tolist()


def test_top_b_length_beam(trained_abnet):
    model, _, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    encoder_out, src_tokens = forced_lengths(model, task, [3, 7, 5])
    out = model.initialize_output_tokens(encoder_out, src_tokens)
    assert canvas_lengths(out, model.pad) == [3, 3]
    beam = model.regenerate_length_beam(out, 3)
    assert canvas_lengths(beam, model.pad) == [3, 7, 5, 3, 7, 5]  # top-3, not a window


def test_canvases_never_outgrow_the_positions_or_max_len(trained_abnet):
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    model, _, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    model.eval()
    positions = model.decoder.max_positions()  # the tiny target BERT's 64 positions
    assert model.args.max_length_classes > positions + 1  # 256 length classes
    encoder_out, src_tokens = forced_lengths(model, task, [200, 90, 7, 5, 30])
    out = model.initialize_output_tokens(encoder_out, src_tokens)
    assert canvas_lengths(out, model.pad) == [7, 7]  # 200 and 90 are beyond the positions
    beam = canvas_lengths(model.regenerate_length_beam(out, 5), model.pad)[:5]
    assert beam[:3] == [7, 5, 30] and max(beam) <= positions  # then the other allowed lengths
    model.max_len_a, model.max_len_b = 0.0, 6  # fairseq's --max-len-b 6
    out = model.initialize_output_tokens(encoder_out, src_tokens)
    assert canvas_lengths(out, model.pad) == [5, 5]
    model.max_len_a, model.max_len_b = 0.0, None
    forced_lengths(model, task, [200])  # all the mass beyond the positions: no IndexError
    generator = IterativeRefinementGenerator(task.tgt_dict, max_iter=2, beam_size=2)
    hypos = generator.generate([model], first_batch(task, "test", 2))
    assert all(len(h[0]["tokens"]) <= positions for h in hypos)


def count_decoder_passes(model, task, sample, **generator_args):
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    calls = []
    extract = model.decoder.extract_features
    model.decoder.extract_features = lambda *a, **k: calls.append(1) or extract(*a, **k)
    generator = IterativeRefinementGenerator(task.tgt_dict, **generator_args)
    hypos = generator.generate([model], sample)
    del model.decoder.extract_features
    return len(calls), hypos


def test_decoding_honours_max_iter_and_stops_early(trained_abnet):
    model, _, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    model.eval()
    sample = first_batch(task, "test", 1)
    forced, _ = count_decoder_passes(model, task, sample, max_iter=4, adaptive=False)
    assert forced == 5  # fairseq counts from 0: --iter-decode-max-iter 4 = 5 passes
    # A decoder whose prediction ignores its input is stable after its second pass.
    vocab = len(task.tgt_dict)
    constant = torch.arange(vocab, dtype=torch.float).index_fill(
        0, model.decoder.unpredictable, float("-inf")).log_softmax(-1)
    masked_lprobs = model.decoder.masked_lprobs
    model.decoder.masked_lprobs = lambda tokens, enc, masks: (
        masked_lprobs(tokens, enc, masks) * 0 + constant)
    adaptive, hypos = count_decoder_passes(model, task, sample, max_iter=9, adaptive=True)
    assert adaptive < 10
    tokens = hypos[0][0]["tokens"].tolist()
    assert task.tgt_dict.mask() not in tokens and tokens[0] == task.tgt_dict.bos()
    assert tokens[-1] == task.tgt_dict.eos()


def test_masked_lprobs_match_the_full_decoder(trained_abnet):
    model, _, task = load_trained(trained_abnet[0] / "checkpoint_last.pt")
    model.eval()
    sample = first_batch(task, "test", 2)
    net = sample["net_input"]
    enc = model.forward_encoder([net["src_tokens"], net["src_lengths"]])
    canvas = task.inject_noise(sample["target"])
    masks = canvas.eq(task.tgt_dict.mask())
    full = model.decoder(normalize=True, prev_output_tokens=canvas, encoder_out=enc)
    assert torch.allclose(model.decoder.masked_lprobs(canvas, enc, masks), full[masks], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the CLIs end to end
# ---------------------------------------------------------------------------------------------
def test_generate_mask_predict_end_to_end(trained_abnet, abnet_data):
    save_dir, log = trained_abnet
    assert num_updates(log) == 30
    out = generate(abnet_data, save_dir / "checkpoint_last.pt", extra=[
        "--task", "translation_abnet", "--iter-decode-max-iter", "9",
        "--iter-decode-with-beam", "4"])
    hyps = hypotheses(out.stdout)
    assert sorted(hyps) == list(range(10))
    assert not any("[MASK]" in h or "[CLS]" in h or "[SEP]" in h for h in hyps.values())
    assert all(set(h.split()) <= set("ABCDEFGHIJKLMNOP") | {"[UNK]"} for h in hyps.values())
    # fairseq-interactive and the hub interface give the same translations
    sources = [outputs(out.stdout, "S")[i] for i in range(10)]
    inter = interactive(abnet_data, save_dir / "checkpoint_last.pt", sources, extra=[
        "--task", "translation_abnet", "--iter-decode-max-iter", "9", "--iter-decode-with-beam", "4"])
    assert hypotheses(inter.stdout) == hyps
    hub = hub_translate(save_dir / "checkpoint_last.pt", abnet_data, sources,
                        generation={"iter_decode_max_iter": 9, "iter_decode_with_beam": 4})
    assert hub == [hyps[i] for i in range(10)]


def test_training_lowers_the_loss(trained_abnet):
    log = trained_abnet[1]
    losses = [float(x) for x in re.findall(r"train_inner .*? loss=([\d.]+)", log)]
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("arch,task,criterion,gen", [
    ("abnet_enc_tiny", "translation_bert", "label_smoothed_cross_entropy", {"beam": 3}),
    ("abnet_enc_cmlm_tiny", "translation_abnet", "nat_loss",
     {"iter_decode_max_iter": 4, "iter_decode_with_beam": 2}),
])
def test_abnet_enc_variants_end_to_end(abnet_data, berts, tmp_path, arch, task, criterion, gen):
    """Both BERT tasks (whose tiny BERTs have different [SEP] ids) trained under two-rank DDP,
    then through fairseq-generate, fairseq-interactive and the hub interface, with the same
    output."""
    logs = run_ddp(train_args(abnet_data, tmp_path, model_args=[], extra=[
        "--task", task, "--arch", arch, "--source-bert", berts[0], "--criterion", criterion,
        "--label-smoothing", "0.1", "--max-update", "3"]))
    assert "distributed init (rank 1)" in logs[1] and num_updates(logs[0]) == 3
    assert "AB-Net-Enc" in logs[0]
    gen_options = [f"--{k.replace('_', '-')}={v}" for k, v in gen.items()]
    out = generate(abnet_data, tmp_path / "checkpoint_last.pt", extra=["--task", task, *gen_options])
    generated = hypotheses(out.stdout)
    assert sorted(generated) == list(range(10))
    sources = [outputs(out.stdout, "S")[i] for i in range(10)]  # WordPiece tokens, as binarised
    inter = interactive(abnet_data, tmp_path / "checkpoint_last.pt", sources,
                        extra=["--task", task, *gen_options])
    assert hypotheses(inter.stdout) == generated
    hub = hub_translate(tmp_path / "checkpoint_last.pt", abnet_data, sources, generation=gen)
    assert hub == [generated[i] for i in range(10)]


def test_resume_from_checkpoint(abnet_data, berts, trained_abnet, tmp_path):
    shutil.copy(trained_abnet[0] / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")
    out = train(abnet_data, tmp_path, model_args=[], extra=abnet_args(berts, extra=[
        "--max-update", "32"]))
    log = out.stdout + out.stderr
    assert "@ 30 updates" in log and num_updates(log) == 32


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_wrong_bert_for_the_data_is_refused(abnet_data, berts, tmp_path):
    proc = run_cli("fairseq-train", train_args(abnet_data, tmp_path, model_args=[], extra=[
        *abnet_args((berts[0], berts[0])), "--max-update", "1"]), check=False)
    assert proc.returncode != 0
    assert "target vocabulary mismatch" in proc.stderr
    assert "dict.tgt.txt" in proc.stderr and "vocab.txt" in proc.stderr


def test_data_binarised_with_fairseq_dictionary_is_refused(tiny_data, berts, tmp_path):
    from ptnmt_fairseq.common.bert.dictionary import BertDictionary

    data = shutil.copytree(tiny_data, tmp_path / "bin")  # plain fairseq Dictionary ids
    # The dict files are even replaced by BERT ones: only the ids reveal the mismatch.
    for lang, bert in (("src", berts[0]), ("tgt", berts[1])):
        BertDictionary.from_vocab_txt(Path(bert) / "vocab.txt").save(str(data / f"dict.{lang}.txt"))
    proc = run_cli("fairseq-train", train_args(data, tmp_path / "ck", model_args=[], extra=[
        *abnet_args(berts), "--max-update", "1"]), check=False)
    assert proc.returncode != 0
    assert "binarised with another dictionary" in proc.stderr and ".bin" in proc.stderr


# ---------------------------------------------------------------------------------------------
# two-rank DDP, and the real MiniLM
# ---------------------------------------------------------------------------------------------
def test_two_rank_ddp(abnet_data, berts, tmp_path):
    """AB-Net; the AB-Net-Enc variants train under DDP in their end-to-end test."""
    outputs = run_ddp(train_args(abnet_data, tmp_path, model_args=[], extra=[
        "--task", "translation_abnet", "--arch", "abnet_tiny", "--source-bert", berts[0],
        "--target-bert", berts[1], "--criterion", "nat_loss", "--label-smoothing", "0.1",
        "--max-update", "3"]))
    assert "distributed init (rank 1)" in outputs[1]
    assert num_updates(outputs[0]) == 3


def test_packaged_minilm_end_to_end(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pairs = [("the file is open", "die datei ist offen"), ("close the window", "schliesse das fenster"),
             ("save the file", "speichere die datei"), ("open a new window", "oeffne ein neues fenster")]
    for split, reps in (("train", 12), ("test", 1)):  # bert_binarize.sh: valid is optional
        (raw / f"{split}.en-de.en").write_text("".join(f"{e}\n" for e, _ in pairs * reps))
        (raw / f"{split}.en-de.de").write_text("".join(f"{d}\n" for _, d in pairs * reps))
    bert = "all-MiniLM-L6-v2"
    data = binarize(raw, (bert, bert), tmp_path / "bin", src="en", tgt="de")
    out = train(data, tmp_path / "ck", model_args=[], extra=[
        "--task", "translation_abnet", "--arch", "abnet_tiny", "--source-bert", bert,
        "--target-bert", bert, "--source-lang", "en", "--target-lang", "de",
        "--criterion", "nat_loss", "--max-update", "1", "--max-tokens", "2000",
        "--disable-validation"])
    assert "AB-Net:" in out.stdout
    log = out.stdout + out.stderr  # one line on the fresh MLM head, not transformers' table
    assert log.count("has no MLM-head weights") == 1 and "LOAD REPORT" not in log
    out = generate(data, tmp_path / "ck/checkpoint_last.pt", extra=[
        "--task", "translation_abnet", "--source-lang", "en", "--target-lang", "de",
        "--iter-decode-max-iter", "2"])
    assert len(hypotheses(out.stdout)) == 4
    assert "LOAD REPORT" not in out.stdout + out.stderr and "MISSING" not in out.stdout


def test_plain_cmlm_transformer_is_refused_on_bert_mask_data(abnet_data, berts, tmp_path):
    # cmlm_transformer shares all embeddings: give it source-to-source data on one BERT vocabulary
    data = tmp_path / "bin"
    data.mkdir()
    for source_side in [*abnet_data.glob("*.src.bin"), *abnet_data.glob("*.src.idx"),
                        abnet_data / "dict.src.txt"]:
        shutil.copy(source_side, data / source_side.name)
        target_side = source_side.name[:-len(".src.bin")] + ".tgt" + source_side.suffix
        shutil.copy(source_side, data / target_side)
    proc = run_cli("fairseq-train", train_args(data, tmp_path, model_args=[], extra=[
        "--task", "translation_abnet", "--arch", "cmlm_transformer", "--criterion", "nat_loss",
        "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
        "--decoder-embed-dim", "16", "--max-update", "1"]), check=False)
    assert proc.returncode != 0 and "masks with id 1 ('[UNK]')" in proc.stderr
