#!/usr/bin/env python3
"""Build an English-centric multi-way parallel corpus from gettext catalogs.

Every compiled gettext catalog (``<root>/<locale>/LC_MESSAGES/*.mo``) holds
human translations of English software messages.  For each requested
language this script collects (English msgid, translated msgstr) pairs over
all catalogs of that locale, cleans and filters them, keeps one translation
per English sentence and splits the result into train/valid/test by a hash
of the English side, so one English sentence never lands in two splits,
whatever the language pair.

Output (raw text, one sentence per line, line-aligned)::

    OUTDIR/{train,valid,test}.en-LANG.{en,LANG}
    OUTDIR/test.multiway.{en,LANG1,LANG2,...}   # test sentences translated
                                                # into every requested LANG
    OUTDIR/stats.json                           # line counts

Locales: a language ``xx`` uses the catalogs of ``xx`` and of its regional
variants ``xx_*`` (e.g. ``de_CH``); script/modifier variants such as
``sr@latin`` are excluded because they use a different writing system.
Translations from the plain ``xx`` directory win over regional ones.

Usage::

    gettext_corpus.py OUTDIR de fr ro [--max-train N] [--locale-root DIR]
"""

import argparse
import collections
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

DEFAULT_LOCALE_ROOT = Path("/usr/share/locale")
SPLITS = ("train", "valid", "test")
HASH_BUCKETS = 1000
TEST_BUCKETS = 25  # buckets [0, 25) -> test  (2.5 %)
VALID_BUCKETS = 50  # buckets [25, 50) -> valid (2.5 %)
MIN_ENGLISH_WORDS = 2
MAX_ENGLISH_WORDS = 50

MO_MAGIC = 0x950412DE
PLURAL_SEPARATOR = "\x00"
CONTEXT_SEPARATOR = "\x04"

# printf (%s, %-5.2f, %1$s, %lu, binutils' %P), Python (%(name)s), Qt (%1),
# shell (${VAR}) and brace
# ({0}, {name}) placeholders: sentences containing them are templates, not
# natural text, and their placeholders would have to be copied verbatim.
FORMAT_PATTERN = re.compile(
    r"%(\([^)]*\))?(\d+\$)?[-#0 +']*(\d+|\*)?(\.(\d+|\*))?"
    r"(hh|h|ll|l|L|q|j|z|t|I64|I32|PRI\w+)?[A-Za-z%]"
    r"|%\d+|%\{|\{\w*\}|\$\{?\w+\}?"
)
# Markup and entities: XML/HTML tags, &amp; style entities.
MARKUP_PATTERN = re.compile(r"<[^>]*>|&#?\w+;")
# Accelerators appended in CJK style: "ファイル(_F)" / "(&F)".
TRAILING_ACCELERATOR = re.compile(r"\s*\([_&]\w\)")
# Mnemonic marker right before a letter: "_File", "Spei_chern", "&Open".
ACCELERATOR = re.compile(r"[_&](?=\w)")
WHITESPACE = re.compile(r"\s+")
HAS_LETTER = re.compile(r"[^\W\d_]")


def read_mo_entries(path):
    """Yield raw (msgid, msgstr) strings from a compiled .mo catalog.

    A tiny struct parser instead of gettext.GNUTranslations: it keeps
    plural and context markers intact and never evaluates the catalog's
    Plural-Forms expression, which fails on some real-world files.
    """
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short to be a .mo file")
    for byte_order in ("<", ">"):
        if struct.unpack(byte_order + "I", data[:4])[0] == MO_MAGIC:
            break
    else:
        raise ValueError(f"{path}: bad .mo magic number")
    _, count, ids_offset, strs_offset = struct.unpack(byte_order + "4I", data[4:20])

    def string_at(table_offset, index):
        length, offset = struct.unpack_from(byte_order + "2I", data, table_offset + 8 * index)
        return data[offset : offset + length]

    raw_pairs = [(string_at(ids_offset, i), string_at(strs_offset, i)) for i in range(count)]
    charset = catalog_charset(raw_pairs)
    for raw_id, raw_str in raw_pairs:
        try:
            yield raw_id.decode(charset), raw_str.decode(charset)
        except UnicodeDecodeError:
            continue  # a broken entry should not cost the whole catalog


def catalog_charset(raw_pairs):
    """Charset declared in the catalog header (the msgid "" entry)."""
    for raw_id, raw_str in raw_pairs:
        if raw_id == b"":
            match = re.search(rb"charset=([\w.-]+)", raw_str)
            if match:
                charset = match.group(1).decode("ascii")
                return "utf-8" if charset.upper() == "CHARSET" else charset
    return "utf-8"


def singular_without_context(msgid, msgstr):
    """Reduce plural/context entries to their plain singular form."""
    msgid = msgid.split(PLURAL_SEPARATOR)[0]
    msgstr = msgstr.split(PLURAL_SEPARATOR)[0]
    if CONTEXT_SEPARATOR in msgid:
        msgid = msgid.split(CONTEXT_SEPARATOR, 1)[1]
    return msgid, msgstr


def clean_message(text):
    """Remove accelerator markers and normalise whitespace."""
    text = TRAILING_ACCELERATOR.sub("", text)
    text = text.replace("&&", "\x01")  # "&&" is an escaped literal "&"
    text = ACCELERATOR.sub("", text)
    text = text.replace("\x01", "&")
    return WHITESPACE.sub(" ", text).strip()


def is_natural_text(text):
    """Reject templates, markup and strings without any letters."""
    return (
        bool(text)
        and HAS_LETTER.search(text) is not None
        and FORMAT_PATTERN.search(text) is None
        and MARKUP_PATTERN.search(text) is None
    )


def clean_pair(msgid, msgstr):
    """Return a cleaned (english, translation) pair, or None to drop it."""
    if not msgid or not msgstr:  # header entry or untranslated
        return None
    english, translation = singular_without_context(msgid, msgstr)
    # Identifiers such as "gtk_widget_show" are not messages; checked before
    # accelerator removal, which would otherwise glue them together.
    if english.count("_") > 1:
        return None
    english, translation = clean_message(english), clean_message(translation)
    if not (is_natural_text(english) and is_natural_text(translation)):
        return None
    if not MIN_ENGLISH_WORDS <= len(english.split()) <= MAX_ENGLISH_WORDS:
        return None
    if english.casefold() == translation.casefold():
        return None
    return english, translation


def locale_dirs(locale_root, lang):
    """The exact locale directory plus its regional variants, base first."""
    base = locale_root / lang
    variants = sorted(p for p in locale_root.glob(lang + "_*") if p.is_dir())
    return [d for d in [base, *variants] if (d / "LC_MESSAGES").is_dir()]


def catalogs_of(locale_dir):
    return sorted((locale_dir / "LC_MESSAGES").glob("*.mo"))


def collect_translations(locale_root, lang):
    """Map English sentence -> (base-locale counts, variant counts)."""
    dirs = locale_dirs(locale_root, lang)
    catalogs = [(d, mo) for d in dirs for mo in catalogs_of(d)]
    if not catalogs:
        raise SystemExit(
            f"error: no gettext catalogs for language '{lang}': searched "
            f"{locale_root / lang}/LC_MESSAGES/*.mo and "
            f"{locale_root / (lang + '_*')}/LC_MESSAGES/*.mo"
        )
    counts = collections.defaultdict(lambda: (collections.Counter(), collections.Counter()))
    for locale_dir, mo_path in catalogs:
        is_base = locale_dir.name == lang
        try:
            entries = list(read_mo_entries(mo_path))
        except (ValueError, LookupError, struct.error) as error:
            print(f"warning: skipping {mo_path}: {error}", file=sys.stderr)
            continue
        for msgid, msgstr in entries:
            pair = clean_pair(msgid, msgstr)
            if pair:
                base_counts, variant_counts = counts[pair[0]]
                (base_counts if is_base else variant_counts)[pair[1]] += 1
    return counts


def choose_translation(base_counts, variant_counts):
    """Most frequent translation, base locale first, ties lexicographic."""
    candidates = base_counts or variant_counts
    return min(candidates.items(), key=lambda item: (-item[1], item[0]))[0]


def english_hash(english):
    return hashlib.md5(english.encode("utf-8")).hexdigest()


def split_of(english):
    bucket = int(english_hash(english), 16) % HASH_BUCKETS
    if bucket < TEST_BUCKETS:
        return "test"
    if bucket < VALID_BUCKETS:
        return "valid"
    return "train"


def build_pairs(locale_root, lang):
    """English -> chosen translation for one language."""
    counts = collect_translations(locale_root, lang)
    return {english: choose_translation(*c) for english, c in counts.items()}


def hash_ordered(englishes):
    """Deterministic pseudo-random order, so a --max-train prefix is a sample."""
    return sorted(englishes, key=lambda e: (english_hash(e), e))


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(line + "\n")


def write_language_pair(outdir, lang, pairs, max_train):
    by_split = {split: [] for split in SPLITS}
    for english in hash_ordered(pairs):
        by_split[split_of(english)].append(english)
    if max_train is not None:
        by_split["train"] = by_split["train"][:max_train]
    for split, englishes in by_split.items():
        prefix = outdir / f"{split}.en-{lang}"
        write_lines(prefix.with_name(prefix.name + ".en"), englishes)
        write_lines(prefix.with_name(prefix.name + f".{lang}"), [pairs[e] for e in englishes])
    return {split: len(englishes) for split, englishes in by_split.items()}


def write_multiway_test(outdir, pairs_by_lang):
    """Test sentences translated into every language, aligned across files."""
    shared = set.intersection(*(set(pairs) for pairs in pairs_by_lang.values()))
    englishes = hash_ordered(e for e in shared if split_of(e) == "test")
    write_lines(outdir / "test.multiway.en", englishes)
    for lang, pairs in pairs_by_lang.items():
        write_lines(outdir / f"test.multiway.{lang}", [pairs[e] for e in englishes])
    return len(englishes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("langs", nargs="+", help="target languages (locale names, e.g. de fr ro)")
    parser.add_argument("--max-train", type=int, default=None, help="cap training pairs per language")
    parser.add_argument("--locale-root", type=Path, default=DEFAULT_LOCALE_ROOT)
    args = parser.parse_args(argv)
    if "en" in args.langs:
        parser.error("English is the pivot side; do not list 'en' as a target language")
    if len(set(args.langs)) != len(args.langs):
        parser.error("duplicate language")
    return args


def main(argv=None):
    args = parse_args(argv)
    pairs_by_lang = {lang: build_pairs(args.locale_root, lang) for lang in args.langs}
    args.outdir.mkdir(parents=True, exist_ok=True)
    stats = {
        f"en-{lang}": write_language_pair(args.outdir, lang, pairs, args.max_train)
        for lang, pairs in pairs_by_lang.items()
    }
    stats["multiway"] = {"langs": ["en", *args.langs], "test": write_multiway_test(args.outdir, pairs_by_lang)}
    with open(args.outdir / "stats.json", "w", encoding="utf-8") as out:
        json.dump(stats, out, indent=2, sort_keys=True)
        out.write("\n")
    print(json.dumps(stats, sort_keys=True))


if __name__ == "__main__":
    main()
