#!/usr/bin/env python3
"""Convert FreeDict dictd dictionaries into MUSE-style word-pair files.

A dictd dictionary is a pair of files: ``NAME.index`` with lines
``headword<TAB>offset<TAB>length`` (numbers in dictd's own base64) and
``NAME.dict.dz``, a gzip (dictzip) file holding the entry texts.  FreeDict
entries are rendered from TEI and look like::

    Hund /hˈʊnt/ <masc, n, sg>
     [zool.] dog <n>, dawg <n>
             Note: used to represent American speech
          "einen Hund abrichten"  - train a dog
       Synonyms: {...}
     see: {Hunde}, ...

The first line is the headword (with pronunciation and grammar), the
following lines with at most one leading space are translations (possibly
numbered "1. ..."), separated by commas or semicolons; deeper indented
lines are notes, examples and cross references and are ignored.

Output: one ``src<TAB>tgt`` pair per line, both sides lowercased, only
single-word headwords and single-word translations (letters with inner
hyphens/apostrophes), unique and sorted.  File names use ISO 639-1 codes:
``freedict-deu-eng`` -> ``de-en.txt``.

Usage::

    freedict_to_pairs.py OUTDIR deu-eng eng-fra [--dict-dir /usr/share/dictd]
"""

import argparse
import gzip
import re
import sys
from pathlib import Path

DEFAULT_DICT_DIR = Path("/usr/share/dictd")
DICTD_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
DICTD_DIGITS = {char: value for value, char in enumerate(DICTD_BASE64)}

# ISO 639-3 (FreeDict names) -> ISO 639-1 (file names used by this project).
ISO_639_1 = {
    "afr": "af", "ara": "ar", "bre": "br", "bul": "bg", "cat": "ca",
    "ces": "cs", "cym": "cy", "dan": "da", "deu": "de", "ell": "el",
    "eng": "en", "fin": "fi", "fra": "fr", "gle": "ga", "hin": "hi",
    "hrv": "hr", "hun": "hu", "ind": "id", "ita": "it", "jpn": "ja",
    "kur": "ku", "lat": "la", "lit": "lt", "mkd": "mk", "nld": "nl",
    "nno": "nn", "nob": "nb", "nor": "no", "oci": "oc", "pol": "pl",
    "por": "pt", "ron": "ro", "rus": "ru", "san": "sa", "slk": "sk",
    "slv": "sl", "spa": "es", "srp": "sr", "swe": "sv", "swh": "sw",
    "tur": "tr", "wol": "wo",
}  # fmt: skip

SINGLE_WORD = re.compile(r"^[^\W\d_]+(?:['’-][^\W\d_]+)*$")
# Grammar <...>, domain/usage labels [...], clarifications (...) and
# pronunciation /.../ are annotations, not part of the translation.
ANNOTATIONS = re.compile(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|/[^/]*/")
SENSE_NUMBER = re.compile(r"^\d+\.\s*")
TRANSLATION_SEPARATORS = re.compile(r"[,;]")


def decode_dictd_number(text):
    value = 0
    for char in text:
        value = value * 64 + DICTD_DIGITS[char]
    return value


def read_index(path):
    """Yield unique (offset, length) entry locations in index order."""
    seen = set()
    with open(path, encoding="utf-8") as index:
        for line_number, line in enumerate(index, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated fields")
            headword, offset, length = fields
            if headword.startswith("00database") or headword.startswith("00-database"):
                continue  # metadata pseudo-entries (info, url, ...)
            location = (decode_dictd_number(offset), decode_dictd_number(length))
            if location not in seen:  # one entry may be indexed under several keys
                seen.add(location)
                yield location


def headword_of(first_line):
    return ANNOTATIONS.sub(" ", first_line).strip()


def is_translation_line(line):
    """Translation lines have no indentation, or one space before a label."""
    indent = len(line) - len(line.lstrip(" "))
    return bool(line.strip()) and (indent == 0 or (indent == 1 and line.lstrip().startswith("[")))


def translations_of(body_lines):
    for line in body_lines:
        if not is_translation_line(line):
            continue
        text = SENSE_NUMBER.sub("", line.strip())
        text = ANNOTATIONS.sub(" ", text)
        for translation in TRANSLATION_SEPARATORS.split(text):
            translation = " ".join(translation.split())
            if translation:
                yield translation


def normalise_word(text):
    """Lowercased word, or None for multi-word or non-alphabetic strings."""
    word = text.strip().lower()
    return word if SINGLE_WORD.match(word) else None


def entry_pairs(entry_text):
    lines = entry_text.split("\n")
    source = normalise_word(headword_of(lines[0]))
    if source is None:
        return
    for translation in translations_of(lines[1:]):
        target = normalise_word(translation)
        if target is not None:
            yield source, target


def dictionary_pairs(index_path, dict_path):
    """All unique single-word (source, target) pairs of one dictionary."""
    with gzip.open(dict_path) as dict_file:
        data = dict_file.read()
    pairs = set()
    for offset, length in read_index(index_path):
        if offset + length > len(data):
            raise ValueError(f"{index_path}: entry at {offset}+{length} is beyond the end of {dict_path}")
        entry = data[offset : offset + length].decode("utf-8", errors="replace")
        pairs.update(entry_pairs(entry))
    return sorted(pairs)


def output_name(pair_name):
    """'deu-eng' -> 'de-en' (ISO 639-1 where known, else the code as is)."""
    source, target = pair_name.split("-")
    return f"{ISO_639_1.get(source, source)}-{ISO_639_1.get(target, target)}"


def convert(dict_dir, pair_name, outdir):
    index_path = dict_dir / f"freedict-{pair_name}.index"
    dict_path = dict_dir / f"freedict-{pair_name}.dict.dz"
    for path in (index_path, dict_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found (install it with: apt-get install dict-freedict-{pair_name})"
            )
    pairs = dictionary_pairs(index_path, dict_path)
    out_path = outdir / f"{output_name(pair_name)}.txt"
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        for source, target in pairs:
            out.write(f"{source}\t{target}\n")
    return out_path, len(pairs)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("pairs", nargs="+", help="FreeDict pair names such as deu-eng eng-fra")
    parser.add_argument("--dict-dir", type=Path, default=DEFAULT_DICT_DIR)
    args = parser.parse_args(argv)
    for pair_name in args.pairs:
        if not re.fullmatch(r"[a-z]{3}-[a-z]{3}", pair_name):
            parser.error(f"bad pair name '{pair_name}' (expected e.g. deu-eng)")
    return args


def main(argv=None):
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for pair_name in args.pairs:
        try:
            out_path, count = convert(args.dict_dir, pair_name, args.outdir)
        except (OSError, ValueError) as error:
            sys.exit(f"error: {error}")
        print(f"{out_path}\t{count} pairs")


if __name__ == "__main__":
    main()
