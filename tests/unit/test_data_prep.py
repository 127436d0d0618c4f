"""Tests for the offline real-data preparation scripts in examples/data/.

The scripts run as subprocesses on the real data of this machine: gettext
catalogs under /usr/share/locale, FreeDict dictionaries under
/usr/share/dictd and the espeak-ng synthesiser.  Tests that need a missing
Debian package skip and name the package; they never install anything.
"""
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DATA_SCRIPTS = REPO / "examples" / "data"
LOCALE_ROOT = Path("/usr/share/locale")
DICT_DIR = Path("/usr/share/dictd")
LANGS = ("de", "fr")
SPLITS = ("train", "valid", "test")
ENV = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}

# Placeholders the corpus filter must have removed.
FORMAT_STRING = re.compile(r"%[sdiuxfcl]|%\(\w+\)[sd]|%\d+\$|\{\d*\}|\{[A-Za-z_]\w*\}")


def run_script(*args, check=True):
    result = subprocess.run(
        [str(a) for a in args], env=ENV, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        pytest.fail(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def read_lines(path):
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def load_module(name):
    spec = importlib.util.spec_from_file_location(name, DATA_SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def directory_digest(directory):
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def has_catalogs(lang):
    return any(LOCALE_ROOT.glob(f"{lang}/LC_MESSAGES/*.mo"))


@pytest.fixture(scope="module")
def gettext_corpus(tmp_path_factory):
    missing = [lang for lang in LANGS if not has_catalogs(lang)]
    if missing:
        pytest.skip(f"no gettext catalogs under {LOCALE_ROOT} for {missing}")
    outdir = tmp_path_factory.mktemp("gettext")
    run_script("bash", DATA_SCRIPTS / "prepare_gettext.sh", outdir, *LANGS)
    return outdir


def test_gettext_pairs_are_line_aligned_and_clean(gettext_corpus):
    for lang in LANGS:
        for split in SPLITS:
            english = read_lines(gettext_corpus / f"{split}.en-{lang}.en")
            foreign = read_lines(gettext_corpus / f"{split}.en-{lang}.{lang}")
            assert len(english) == len(foreign) > 0, (lang, split)
            assert len(set(english)) == len(english), "English side must be deduplicated"
            for source, target in zip(english, foreign):
                assert target and source.casefold() != target.casefold()
                assert 2 <= len(source.split()) <= 50, source
                assert "\t" not in source + target
                assert not FORMAT_STRING.search(source) and not FORMAT_STRING.search(target), (source, target)
    assert len(read_lines(gettext_corpus / "train.en-de.en")) > 5000  # ~24k on Debian 12


def test_gettext_splits_share_no_english_sentence(gettext_corpus):
    english_by_split = {
        split: {line for lang in LANGS for line in read_lines(gettext_corpus / f"{split}.en-{lang}.en")}
        for split in SPLITS
    }
    assert not english_by_split["train"] & english_by_split["valid"]
    assert not english_by_split["train"] & english_by_split["test"]
    assert not english_by_split["valid"] & english_by_split["test"]


def test_gettext_multiway_test_is_aligned(gettext_corpus):
    multiway = {lang: read_lines(gettext_corpus / f"test.multiway.{lang}") for lang in ("en", *LANGS)}
    assert len({len(lines) for lines in multiway.values()}) == 1
    assert len(multiway["en"]) > 0
    for lang in LANGS:
        pair = dict(
            zip(
                read_lines(gettext_corpus / f"test.en-{lang}.en"),
                read_lines(gettext_corpus / f"test.en-{lang}.{lang}"),
            )
        )
        assert [pair[e] for e in multiway["en"]] == multiway[lang]


def test_gettext_stats_match_files(gettext_corpus):
    stats = json.loads((gettext_corpus / "stats.json").read_text())
    for lang in LANGS:
        for split in SPLITS:
            assert stats[f"en-{lang}"][split] == len(read_lines(gettext_corpus / f"{split}.en-{lang}.en"))
    assert stats["multiway"]["test"] == len(read_lines(gettext_corpus / "test.multiway.en"))


def test_gettext_is_deterministic(gettext_corpus, tmp_path):
    run_script(sys.executable, DATA_SCRIPTS / "gettext_corpus.py", tmp_path, *LANGS)
    assert directory_digest(tmp_path) == directory_digest(gettext_corpus)


def test_gettext_max_train_caps_training_lines(tmp_path):
    if not has_catalogs("de"):
        pytest.skip(f"no gettext catalogs under {LOCALE_ROOT}/de")
    run_script(sys.executable, DATA_SCRIPTS / "gettext_corpus.py", tmp_path, "de", "--max-train", "50")
    assert len(read_lines(tmp_path / "train.en-de.en")) == 50


def test_gettext_unknown_language_names_the_directory(tmp_path):
    result = run_script(sys.executable, DATA_SCRIPTS / "gettext_corpus.py", tmp_path, "zz", check=False)
    assert result.returncode != 0
    assert str(LOCALE_ROOT / "zz") in result.stderr


def write_mo(path, messages):
    """Minimal little-endian .mo writer (what msgfmt produces), for parser tests."""
    keys = sorted(messages)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(messages[k].encode() + b"\0" for k in keys)
    header_size = 7 * 4
    ids_table, strs_table = header_size, header_size + 8 * len(keys)
    data_start = strs_table + 8 * len(keys)
    id_entries, str_entries, offset = [], [], data_start
    for k in keys:
        id_entries.append((len(k.encode()), offset))
        offset += len(k.encode()) + 1
    for k in keys:
        str_entries.append((len(messages[k].encode()), offset))
        offset += len(messages[k].encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), ids_table, strs_table, 0, 0)
    table = b"".join(struct.pack("<2I", *e) for e in id_entries + str_entries)
    path.write_bytes(header + table + ids + strs)


def test_gettext_parser_handles_plural_context_and_filters(tmp_path):
    corpus = load_module("gettext_corpus")
    locale = tmp_path / "locale" / "xx" / "LC_MESSAGES"
    locale.mkdir(parents=True)
    write_mo(
        locale / "app.mo",
        {
            "": "Content-Type: text/plain; charset=UTF-8\n",
            "Open the _file": "Die _Datei öffnen",
            "menu\x04Save all files": "Alle Dateien speichern",
            "One new message\x00Many new messages": "Eine neue Nachricht\x00Viele neue Nachrichten",
            "Copy %s to target": "Kopiere %s zum Ziel",
            "Hello {name} there": "Hallo {name} dort",
            "Single": "Einzeln",
            "Same text here": "Same text here",
            "Untranslated entry here": "",
        },
    )
    pairs = corpus.build_pairs(tmp_path / "locale", "xx")
    assert pairs == {
        "Open the file": "Die Datei öffnen",
        "Save all files": "Alle Dateien speichern",
        "One new message": "Eine neue Nachricht",
    }


def test_freedict_conversion_gives_word_pairs(tmp_path):
    index = DICT_DIR / "freedict-deu-eng.index"
    if not index.is_file():
        pytest.skip(f"{index} missing: apt-get install dict-freedict-deu-eng")
    run_script(sys.executable, DATA_SCRIPTS / "freedict_to_pairs.py", tmp_path, "deu-eng")
    lines = read_lines(tmp_path / "de-en.txt")
    assert len(lines) > 10000
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 2 and all(fields), line
        assert all(f == f.lower() and " " not in f for f in fields), line
    assert "hund\tdog" in lines
    assert "haus\thouse" in lines
    assert lines == sorted(set(lines))


def test_freedict_missing_dictionary_names_the_file(tmp_path):
    result = run_script(
        sys.executable, DATA_SCRIPTS / "freedict_to_pairs.py", tmp_path, "deu-eng", "--dict-dir", tmp_path, check=False
    )
    assert result.returncode != 0
    assert str(tmp_path / "freedict-deu-eng.index") in result.stderr


def test_speech_synthesis_writes_16k_manifest(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: apt-get install espeak-ng")
    soundfile = pytest.importorskip("soundfile")
    numpy = pytest.importorskip("numpy")
    english = ["The file could not be opened.", "Save all changes before closing?", "Network connection lost."]
    german = ["Die Datei konnte nicht geöffnet werden.", "Alle Änderungen vor dem Schließen speichern?", "Netzwerkverbindung verloren."]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.en-de.en").write_text("\n".join(english) + "\n", encoding="utf-8")
    (corpus / "train.en-de.de").write_text("\n".join(german) + "\n", encoding="utf-8")
    outdir = tmp_path / "st"
    run_script(sys.executable, DATA_SCRIPTS / "synthesize_speech.py", corpus / "train.en-de", "en", "de", outdir)

    rows = [line.split("\t") for line in read_lines(outdir / "train.tsv")]
    assert rows[0] == ["id", "audio", "n_frames", "src_text", "tgt_text", "src_lang", "tgt_lang"]
    assert len(rows) == 4
    for row, source, target in zip(rows[1:], english, german):
        utt_id, audio, n_frames, src_text, tgt_text, src_lang, tgt_lang = row
        assert (src_text, tgt_text, src_lang, tgt_lang) == (source, target, "en", "de")
        assert audio == f"wav/{utt_id}.wav"  # relative to the output directory
        info = soundfile.info(outdir / audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == int(n_frames) > 16000 // 2  # a sentence lasts over half a second
        samples, _ = soundfile.read(outdir / audio, dtype="float32")
        assert numpy.sqrt(numpy.mean(samples**2)) > 0.01, "audio is silent"

