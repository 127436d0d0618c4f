"""XSTNet and the shared speech pipeline, in process: shrinking, tags, batches, loss, resampling,
bad audio. The corpus and the tiny wav2vec 2.0 are ``conftest.corpus``."""
import math

import numpy as np
import pytest
import soundfile
import torch

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from ptnmt_fairseq.common.speech import dataset as speech_data
from ptnmt_fairseq.common.speech import fbank
from ptnmt_fairseq.common.speech.audio import BadAudioError, read_audio
from ptnmt_fairseq.common.speech.frontend import Shrinker
from conftest import (
    XSTNET_TRAIN_ARGS, build_task, copy_data, label_smoothed_mean, rewrite_manifest, xstnet_task,
)
from tiny_wav2vec2 import num_frames

BAD_AUDIO = {
    "missing": (lambda p: p.unlink(), "file does not exist"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "zero_length": (lambda p: soundfile.write(p, np.zeros(0), 16000), "zero-length audio"),
    "corrupt": (lambda p: p.write_bytes(b"RIFF" + bytes(range(200))), "unreadable audio"),
    "wrong_rate": (lambda p: soundfile.write(p, soundfile.read(p)[0], 8000), "wrong sample rate"),
}


def test_shrinker_lengths_and_padding_invariance():
    torch.manual_seed(0)
    shrinker = Shrinker(8, 16, 12, kernel_sizes=(5, 5))
    frames = torch.randn(3, 37, 8)
    lengths = torch.tensor([37, 20, 1])
    out, out_lengths = shrinker(frames, lengths)
    # floor((L - 1) / 2) + 1 per stride-2 layer: 37 -> 19 -> 10, 20 -> 10 -> 5, 1 -> 1 -> 1
    assert out_lengths.tolist() == [10, 5, 1]
    assert out.shape == (3, 10, 12)
    alone, _ = shrinker(frames[1:2, :20], lengths[1:2])
    assert torch.allclose(out[1, :5], alone[0], atol=1e-6)


def padded_waveforms():
    """Two clips of 1 s and 0.5 s of noise, the second zero-padded to the first's length."""
    torch.manual_seed(0)
    waveforms = torch.randn(2, 16000) * 0.1
    waveforms[1, 8000:] = 0.0
    return waveforms, torch.tensor([16000, 8000])


def encode_padded_and_alone(model):
    """The encoder's output for both clips in one batch, and for the short clip alone."""
    waveforms, lengths = padded_waveforms()
    with torch.no_grad():
        return (model.encoder(waveforms, lengths),
                model.encoder(waveforms[1:2, :8000], lengths[1:]))


def test_encoder_lengths_audio_tag_and_padding(corpus):
    data, w2v = corpus
    cfg, task = xstnet_task(data, w2v)
    model = task.build_model(cfg.model).eval()
    out, alone = encode_padded_and_alone(model)
    # wav2vec 2.0: 49 and 24 frames; shrinker: 49 -> 25 -> 13, 24 -> 12 -> 6; + <audio>
    assert (num_frames(16000), num_frames(8000)) == (49, 24)
    steps = (~out["encoder_padding_mask"][0]).sum(1).tolist()
    assert steps == [14, 7]
    assert out["encoder_out"][0].shape[:2] == (14, 2)
    audio = task.dictionary.index("<audio>")
    embed = model.encoder.transformer
    assert torch.allclose(out["encoder_embedding"][0][:, 0],
                          embed.embed_scale * embed.embed_tokens.weight[audio].expand(2, -1))
    # the short clip's encoding does not depend on the batch's padding
    assert torch.allclose(out["encoder_out"][0][:7, 1], alone["encoder_out"][0][:, 0], atol=1e-4)


def test_log_mel_filterbank_frames_and_utterance_cmvn(corpus):
    data, _w2v = corpus
    wav = next((data / "wav").glob("*.wav"))
    waveform = read_audio(wav).float()
    features = fbank.log_mel_filterbank(waveform)
    # 25 ms windows every 10 ms at 16 kHz (Kaldi, snip_edges): 1 + (samples - 400) // 160 frames
    assert features.shape == (1 + (waveform.numel() - 400) // 160, 80)
    # utterance CMVN, by hand: every bin has mean 0 and variance 1 over the utterance
    assert torch.allclose(features.mean(0), torch.zeros(80), atol=1e-4)
    assert torch.allclose(features.var(0, unbiased=False), torch.ones(80), atol=1e-3)
    # the energies are of the waveform in 16-bit range, as Kaldi and fairseq's get_fbank: a
    # 1 kHz tone puts its energy in the mel bin around 1 kHz, not in the lowest bins
    import torchaudio.compliance.kaldi as kaldi

    tone = torch.sin(2 * math.pi * 1000 * torch.arange(16000) / 16000) * 0.5
    raw = kaldi.fbank(tone.unsqueeze(0) * 2 ** 15, num_mel_bins=80, dither=0.0)
    mel_1k = 2595 * math.log10(1 + 1000 / 700)  # bin centres are equally spaced in mel
    centre = int(round(mel_1k / (2595 * math.log10(1 + 8000 / 700)) * 81)) - 1
    assert abs(int(raw.mean(0).argmax()) - centre) <= 1
    with pytest.raises(ValueError, match="399 samples is shorter than one 25 ms"):
        fbank.log_mel_filterbank(torch.zeros(399))


def test_fbank_encoder_lengths_and_padding(corpus):
    data, _w2v = corpus
    cfg, task = build_task([data, *XSTNET_TRAIN_ARGS, "--speech-frontend", "fbank"])
    model = task.build_model(cfg.model).eval()
    assert model.encoder.wav2vec2 is None and not any("wav2vec2" in k for k in model.state_dict())
    out, alone = encode_padded_and_alone(model)
    # fbank frames: 1 + (16000 - 400) // 160 = 98, 48; subsampler: 98 -> 49 -> 25, 48 -> 24 -> 12;
    # + <audio>
    steps = (~out["encoder_padding_mask"][0]).sum(1).tolist()
    assert steps == [26, 13]
    assert torch.allclose(out["encoder_out"][0][:13, 1], alone["encoder_out"][0][:, 0], atol=1e-4)
    # under --bf16 fairseq hands the model bfloat16 waveforms and weights
    frontend = model.encoder.fbank.to(torch.bfloat16)
    waveforms, lengths = padded_waveforms()
    speech, steps = frontend(waveforms.bfloat16(), lengths)
    assert speech.dtype == torch.bfloat16 and steps.tolist() == [25, 12]


def test_language_tags_in_every_task(corpus):
    data, w2v = corpus
    _, task = xstnet_task(data, w2v)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    d = task.dictionary
    en, fr = d.index("<lang:en>"), d.index("<lang:fr>")
    tasks = sample["tasks"]
    assert set(tasks) == {"st", "asr", "mt"}
    assert tasks["st"]["net_input"]["src_tokens"].is_floating_point()
    assert tasks["st"]["net_input"]["prev_output_tokens"][:, 0].eq(fr).all()
    assert tasks["asr"]["net_input"]["prev_output_tokens"][:, 0].eq(en).all()
    assert tasks["mt"]["net_input"]["src_tokens"][:, 0].eq(en).all()
    assert tasks["mt"]["net_input"]["prev_output_tokens"][:, 0].eq(fr).all()
    for name, batch in tasks.items():
        target, prev = batch["target"], batch["net_input"]["prev_output_tokens"]
        assert not target.eq(en).any() and not target.eq(fr).any(), name  # never predicted
        real = target.ne(d.pad())
        assert (prev[:, 1:][real[:, 1:]] == target[:, :-1][real[:, 1:]]).all(), name
        assert target.gather(1, real.sum(1, keepdim=True) - 1).eq(d.eos()).all(), name
    # the transcript is what ASR predicts and MT reads
    row = 0
    transcript = tasks["asr"]["target"][row]
    mt_source = tasks["mt"]["net_input"]["src_tokens"][row]
    assert mt_source[1:1 + transcript.ne(d.pad()).sum()].tolist() == \
        transcript[transcript.ne(d.pad())].tolist()
    assert task.bpe.decode(d.string(transcript[transcript.ne(d.pad())][:-1])) == \
        dataset.rows[int(sample["id"][row])]["src_text"]


def test_missing_language_tag_is_named(corpus, tmp_path):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")
    lines = (copy / "dict.txt").read_text(encoding="utf-8").splitlines()
    (copy / "dict.txt").write_text("\n".join(l for l in lines if not l.startswith("<lang:fr>"))
                                   + "\n", encoding="utf-8")
    _, task = xstnet_task(copy, w2v)
    with pytest.raises(ValueError, match=r"<lang:fr> is not in .*dict.txt .*valid.tsv:2"):
        task.load_dataset("valid")


def test_multitask_batch_composition(corpus):
    data, w2v = corpus
    _, task = xstnet_task(data, w2v, "--external-mt", "train_mt.tsv", "--external-mt-ratio", "0.5",
                    "--batch-size", "4")
    task.load_dataset("train")
    dataset = task.dataset("train")
    iterator = task.get_batch_iterator(dataset, max_tokens=200000, max_sentences=4,
                                       required_batch_size_multiple=1, seed=1, epoch=1)
    batches = list(iterator.next_epoch_itr(shuffle=True))
    triples = [b for b in batches if "st" in b["tasks"]]
    external = [b for b in batches if "st" not in b["tasks"]]
    n_triples = len(dataset.datasets[0])
    n_external = len(dataset.datasets[1])
    # every triple once, with all three tasks on the same sentences
    ids = sorted(int(i) for b in triples for i in b["id"])
    assert ids == list(range(n_triples))
    assert all(set(b["tasks"]) == {"st", "asr", "mt"} for b in triples)
    assert all(b["tasks"]["st"]["net_input"]["src_tokens"].is_floating_point() for b in triples)
    # external MT: text only, MT only, half of its batches per epoch (--external-mt-ratio 0.5)
    assert all(set(b["tasks"]) == {"mt"} and b["audio_seconds"] == 0.0 for b in external)
    assert len(external) == int(0.5 * math.ceil(n_external / 4))
    # batches of both kinds are interleaved, not one block after the other
    kinds = ["st" in b["tasks"] for b in batches]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_mt_stage_never_reads_audio(corpus, monkeypatch):
    data, w2v = corpus
    _, task = xstnet_task(data, w2v, "--train-tasks", "mt", "--external-mt", "train_mt.tsv")

    def forbidden(*args, **kwargs):
        raise AssertionError("stage 1 (MT) read audio")

    monkeypatch.setattr(speech_data, "read_audio", forbidden)
    task.load_dataset("train")
    triples = task.dataset("train").datasets[0]
    sample = triples.collater([triples[i] for i in range(4)])
    assert set(sample["tasks"]) == {"mt"} and not triples.uses_audio


def test_multitask_loss_matches_hand_computation(corpus):
    data, w2v = corpus
    cfg, task = xstnet_task(data, w2v, "--st-weight", "1.0", "--asr-weight", "0.5",
                      "--mt-weight", "2.0")
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(4)])
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
        expected = 0.0
        for name, weight in (("st", 1.0), ("asr", 0.5), ("mt", 2.0)):
            batch = sample["tasks"][name]
            net_input = batch["net_input"]
            logits, _ = model(net_input["src_tokens"], net_input["src_lengths"],
                              net_input["prev_output_tokens"])
            lprobs = torch.log_softmax(logits.double(), dim=-1)
            expected += weight * label_smoothed_mean(lprobs, batch["target"],
                                                     task.dictionary.pad(), 0.1)
    assert sample_size == sample["tasks"]["st"]["ntokens"]
    assert torch.isclose(loss.double() / sample_size, expected, rtol=1e-4)


def test_resampling_keeps_pitch_and_downmixes(tmp_path):
    t = np.arange(8000) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1), 8000)  # stereo, 8 kHz
    waveform = read_audio(path, 16000)
    assert waveform.shape == (16000,)
    spectrum = torch.fft.rfft(waveform).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s of audio: bin = Hz
    assert math.isclose(float(waveform.abs().max()), 0.375, rel_tol=0.02)  # (0.5 + 0.25) / 2


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_named(corpus, tmp_path, case):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")
    damage, message = BAD_AUDIO[case]
    row = (copy / "valid.tsv").read_text(encoding="utf-8").splitlines()[3].split("\t")
    damage(copy / row[1])
    _, task = xstnet_task(copy, w2v)
    with pytest.raises(BadAudioError) as error:
        task.load_dataset("valid")
    text = str(error.value)
    assert f"valid.tsv:4 (id {row[0]})" in text and row[1] in text and message in text


def test_audio_broken_after_loading_fails_or_is_dropped_from_its_batch(corpus, tmp_path):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")
    _, strict = xstnet_task(copy, w2v)
    _, lenient = xstnet_task(copy, w2v, "--skip-bad-audio")
    strict.load_dataset("valid")
    lenient.load_dataset("valid")
    row = strict.dataset("valid").rows[2]
    soundfile.write(copy / row["audio"], np.zeros(100), 16000)  # mid-training: file replaced
    with pytest.raises(BadAudioError, match=rf"valid.tsv:4 \(id {row['id']}\).*n_frames="):
        strict.dataset("valid")[2]
    dataset = lenient.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert sorted(sample["id"].tolist()) == [0, 1, 3, 4, 5]
    assert dataset.collater([dataset[2]]) == {}  # fairseq's trainer skips an empty batch


def test_clips_too_short_for_wav2vec2_are_filtered(corpus, tmp_path):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")

    def shorten(rows):
        soundfile.write(copy / rows[1][1], np.full(500, 0.1), 16000)
        rows[1][2] = "500"

    rewrite_manifest(copy / "valid.tsv", shorten)
    _, task = xstnet_task(copy, w2v)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    kept, ignored = dataset.filter_indices_by_size(np.arange(len(dataset)), (480000, 1024))
    assert list(ignored) == [1] and 1 not in kept.tolist() and len(kept) == len(dataset) - 1


def test_misaligned_manifest_row_is_named(corpus, tmp_path):
    data, w2v = corpus
    copy = copy_data(data, tmp_path / "st")
    rewrite_manifest(copy / "valid.tsv", lambda rows: rows[2].pop())  # a lost column
    _, task = xstnet_task(copy, w2v)
    with pytest.raises(ValueError, match=r"valid.tsv:4: 6 tab-separated fields, the header has 7"):
        task.load_dataset("valid")



def test_manifest_rows_split_at_newline_only(tmp_path):
    manifest = tmp_path / "test.tsv"
    manifest.write_text("id\taudio\tn_frames\tsrc_text\ttgt_text\tsrc_lang\ttgt_lang\n"
                        "u0\ta.wav\t16000\tone\u2028two\tun deux\ten\tfr\n"
                        "u1\tb.wav\t16000\tcarriage\rreturn\tretour\ten\tfr\n", encoding="utf-8")
    rows = speech_data.read_manifest(manifest)
    assert [r["src_text"] for r in rows] == ["one\u2028two", "carriage\rreturn"]
    assert [r["_line"] for r in rows] == [2, 3]


@pytest.mark.parametrize("frontend", ["wav2vec2", "fbank"])
def test_state_dict_keys_of_existing_checkpoints_are_kept(corpus, frontend):
    """The front-end moved into common/speech/frontend.py; checkpoints keep their keys."""
    data, w2v = corpus
    extra = ["--speech-frontend", "fbank"] if frontend == "fbank" else []
    cfg, task = xstnet_task(data, w2v, *extra)
    keys = set(task.build_model(cfg.model).state_dict())
    expected = {"encoder.transformer.layers.0.fc1.weight", "decoder.layers.0.fc1.weight",
                "encoder.transformer.embed_tokens.weight"}
    expected |= ({"encoder.fbank.subsampler.conv_layers.0.weight"} if frontend == "fbank" else
                 {"encoder.shrinker.convs.0.weight", "encoder.shrinker.convs.1.bias",
                  "encoder.wav2vec2.encoder.layers.0.fc1.weight"})
    assert expected <= keys
    assert all(k.startswith(("encoder.wav2vec2.", "encoder.shrinker.", "encoder.fbank.",
                             "encoder.transformer.", "decoder.")) for k in keys)
