"""sha256 fingerprints of data files, which tie a precomputed artefact (C-MLM's soft labels,
cached BERT features) to the exact binarised data it was computed from."""
import hashlib
from pathlib import Path
from typing import Sequence


def file_sha256(*paths) -> str:
    """One sha256 over the bytes of ``paths``, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def binarized_files(prefix) -> Sequence[Path]:
    """The binarised data ``PREFIX.bin`` and ``PREFIX.idx`` (fairseq-preprocess output, e.g.
    ``DATA/train.de-en.en``)."""
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")
