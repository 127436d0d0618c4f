"""Line-aligned text, read the way ``fairseq-preprocess`` reads it.

Every reader of line-aligned text in the suite (raw parallel text, multi-way test sets, BERT
vocabularies, dictionaries, ``fairseq-generate`` output) splits here. ``str.splitlines()`` also
breaks at U+2028, U+2029, U+0085, \\v, \\f and \\x1c-\\x1e, which occur in real text (gettext
catalogs, web crawls): a file pair that ``wc -l`` and ``fairseq-preprocess`` see as 8 lines then
becomes 9 sentences, and every pair after the break is silently shifted.
"""
from pathlib import Path
from typing import List, Tuple


def split_lines(text: str) -> List[str]:
    """Lines of ``text``, split at ``\\n`` only; a final ``\\n`` ends the last line (it starts no
    empty one) and a ``\\r`` before ``\\n`` (Windows line ends) is dropped."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path) -> List[str]:
    """``split_lines`` of a UTF-8 file; FileNotFoundError naming it when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, encoding="utf-8", newline="") as f:  # no universal newlines: \r stays
        return split_lines(f.read())


def read_aligned(*paths) -> Tuple[List[str], ...]:
    """The lines of several line-aligned files; a ValueError naming every file and its line
    count when the counts differ."""
    sides = tuple(read_lines(p) for p in paths)
    counts = [len(lines) for lines in sides]
    if len(set(counts)) > 1:
        detail = ", ".join(f"{p} has {n} line{'' if n == 1 else 's'}" for p, n in zip(paths, counts))
        raise ValueError(f"{detail}: the files are not line-aligned")
    return sides
