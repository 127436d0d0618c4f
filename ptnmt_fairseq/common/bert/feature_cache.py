"""Frozen-BERT features of a binarised source side, computed once and memory-mapped.

A frozen BERT in eval mode maps a source sentence to the same features at every epoch, yet
BERT-fused (and CTNMT with frozen features) recompute them at every step: the top complaint about
BERT-fused is its speed (bert-nmt/bert-nmt issues: epochs about 40x slower than the Transformer).
This module computes them once per split:

    python -m ptnmt_fairseq.common.bert.feature_cache DATA --source-bert NAME_OR_DIR \\
        -s en -t de --splits train --layers -1 --out CACHE

and ``--task translation_bert --bert-feature-cache CACHE`` then feeds them to the model as
``net_input["bert_features"]`` (``{layer: B x S x C}``) instead of running BERT.

Layout of CACHE: ``manifest.json`` and, per split and layer, ``SPLIT.layerL.bin`` (float32 or
float16, row i the features of token i of the split's concatenated ``[CLS] x [SEP]`` sources) with
``SPLIT.offsets.npy`` (int64, N+1: sentence i is rows offsets[i]:offsets[i+1]), keyed by dataset
index. The manifest records the sha256 of each split's source ``.bin``/``.idx``, the BERT and a
checksum of its weights, and the layers: the task refuses a cache whose data changed, the model
one whose BERT weights or layers differ, or any cache when BERT is being trained.
"""
import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset

from ptnmt_fairseq.common.fingerprints import binarized_files, file_sha256

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def source_fingerprint(data, split, src, tgt) -> dict:
    """sha256 of the source side's binarised files of ``split``, by extension."""
    files = binarized_files(os.path.join(data, f"{split}.{src}-{tgt}.{src}"))
    return {path.suffix: file_sha256(path) for path in files}


def read_manifest(cache_dir) -> dict:
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"--bert-feature-cache {cache_dir}: no {MANIFEST}; build the cache "
                                "with python -m ptnmt_fairseq.common.bert.feature_cache")
    return json.loads(path.read_text())


class BertFeatureCacheDataset(BaseWrapperDataset):
    """A ``LanguagePairDataset`` whose batches carry cached BERT features of their sources.

    ``collater`` adds ``net_input["bert_features"]``: ``{str(layer): B x S x C}`` float32, in the
    batch's sentence order, zero at padding (sources must be right-padded). A split with a
    sentence whose source length differs from its cached row count is refused when wrapped,
    with a ValueError naming the first such dataset index and the cache.
    """

    def __init__(self, dataset, cache_dir, split, manifest):
        super().__init__(dataset)
        if dataset.left_pad_source:
            raise ValueError("--bert-feature-cache needs right-padded sources: drop "
                             "--left-pad-source True")
        self.cache_dir, self.split = Path(cache_dir), split
        self.offsets = np.load(self.cache_dir / f"{split}.offsets.npy")
        if len(self.offsets) != len(dataset) + 1:
            raise ValueError(f"{self.cache_dir}/{split}.offsets.npy has {len(self.offsets) - 1} "
                             f"sentences, the {split} split {len(dataset)}")
        differ = np.flatnonzero(np.diff(self.offsets) != np.asarray(dataset.src_sizes))
        if len(differ):
            raise ValueError(f"{self.cache_dir}/{split}: sentence {differ[0]} has "
                             f"{self.offsets[differ[0] + 1] - self.offsets[differ[0]]} cached "
                             f"positions but {dataset.src_sizes[differ[0]]} source tokens "
                             f"({len(differ)} such sentences; --truncate-source?): rebuild it")
        dim, dtype = manifest["hidden_size"], np.dtype(manifest["dtype"])
        self.layers = {
            str(layer): np.memmap(self.cache_dir / f"{split}.layer{layer}.bin", dtype=dtype,
                                  mode="r", shape=(int(self.offsets[-1]), dim))
            for layer in manifest["layers"]
        }

    def features(self, index):
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return {layer: torch.from_numpy(np.asarray(rows[start:end], dtype=np.float32))
                for layer, rows in self.layers.items()}

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if not batch:
            return batch
        src_tokens = batch["net_input"]["src_tokens"]
        lengths = batch["net_input"]["src_lengths"].tolist()
        features = {layer: src_tokens.new_zeros(*src_tokens.shape, rows.shape[1],
                                                dtype=torch.float32)
                    for layer, rows in self.layers.items()}
        # lengths match the cache: __init__ compared every sentence's
        for row, (index, length) in enumerate(zip(batch["id"].tolist(), lengths)):
            for layer, cached in self.features(index).items():
                features[layer][row, :length] = cached
        batch["net_input"]["bert_features"] = features
        return batch


def wrap_split(dataset, cache_dir, split, data_path, src, tgt):
    """``dataset`` wrapped with the cached features of ``split``, after checking that the cache
    was built from these very binaries; ``dataset`` itself when the cache lacks the split."""
    manifest = read_manifest(cache_dir)
    entry = manifest["splits"].get(split)
    if entry is None:
        logger.info("--bert-feature-cache %s has no %s split: BERT runs live on it", cache_dir,
                    split)
        return dataset
    if entry["source"] != source_fingerprint(data_path, split, src, tgt):
        raise ValueError(f"--bert-feature-cache {cache_dir}: the {split} split was cached from "
                         f"other binaries than {data_path}/{split}.{src}-{tgt}.{src}.bin; rebuild it")
    return BertFeatureCacheDataset(dataset, cache_dir, split, manifest)


def check_model_matches(manifest, cache_dir, checksum, layers, trainable):
    """Refuse a cache the model cannot use: BERT being trained, other weights, other layers."""
    if trainable:
        raise ValueError(f"--bert-feature-cache {cache_dir}: the BERT is being trained, so its "
                         "features change every update; a cache needs a frozen BERT")
    if manifest["bert_checksum"] != checksum:
        raise ValueError(f"--bert-feature-cache {cache_dir} was built with other BERT weights "
                         f"({manifest['bert']}) than the model's: rebuild it")
    missing = sorted(set(str(i) for i in layers) - set(str(i) for i in manifest["layers"]))
    if missing:
        raise ValueError(f"--bert-feature-cache {cache_dir} holds layers {manifest['layers']}, "
                         f"the model reads layers {missing} too")


# ---------------------------------------------------------------------------------------------
# building the cache
# ---------------------------------------------------------------------------------------------
def build_cache(data, bert_name, src, tgt, splits, layers, out, dtype="float32",
                max_tokens=8192, threads=None):
    """Compute and write the features of ``splits``; returns the manifest (dict)."""
    from fairseq.data import data_utils

    from ptnmt_fairseq.common.bert.dictionary import BertDictionary
    from ptnmt_fairseq.common.bert.features import BertFeatures, bert_weights_checksum
    from ptnmt_fairseq.common.bert.pretrained import load_checked_bert

    if threads:
        torch.set_num_threads(threads)
    dictionary = BertDictionary.load(os.path.join(data, f"dict.{src}.txt"))
    bert = load_checked_bert(bert_name, "--source-bert", dictionary, "source")
    features = BertFeatures(bert, layers, frozen=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one: no half-rebuilt cache passes
    manifest = {"bert": bert_name, "bert_checksum": bert_weights_checksum(bert),
                "layers": [int(i) for i in layers], "hidden_size": features.hidden_size,
                "dtype": dtype, "splits": {}}
    for split in splits:
        prefix = os.path.join(data, f"{split}.{src}-{tgt}.{src}")
        dataset = data_utils.load_indexed_dataset(prefix, dictionary)
        if dataset is None:
            raise FileNotFoundError(f"{prefix}.bin/.idx: no such binarised split")
        started = time.monotonic()
        lengths = np.array([len(dataset[i]) + 1 for i in range(len(dataset))], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        files = {layer: np.memmap(out / f"{split}.layer{layer}.bin.tmp", dtype=dtype, mode="w+",
                                  shape=(int(offsets[-1]), features.hidden_size))
                 for layer in layers}
        for batch in length_batches(lengths, max_tokens):
            tokens = [torch.cat([torch.tensor([dictionary.bos()]), dataset[i]]) for i in batch]
            padded = data_utils.collate_tokens(tokens, dictionary.pad())
            with torch.no_grad():
                hidden = features(padded, dictionary.pad())
            for layer in layers:
                for row, i in enumerate(batch):
                    files[layer][offsets[i]:offsets[i + 1]] = (
                        hidden[layer][row, :lengths[i]].numpy().astype(dtype))
        for memmap in files.values():
            memmap.flush()
        files.clear()
        for layer in layers:
            os.replace(out / f"{split}.layer{layer}.bin.tmp", out / f"{split}.layer{layer}.bin")
        np.save(out / f"{split}.offsets.npy", offsets)
        seconds = time.monotonic() - started
        manifest["splits"][split] = {"source": source_fingerprint(data, split, src, tgt),
                                     "sentences": len(dataset), "positions": int(offsets[-1]),
                                     "seconds": round(seconds, 1)}
        logger.info("%s: %d sentences, %d positions in %.0f s", split, len(dataset),
                    offsets[-1], seconds)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)  # the manifest last: a half-built cache has none
    return manifest


def length_batches(lengths, max_tokens):
    """Indices grouped by length (less padding), each group at most ``max_tokens`` positions."""
    order = np.argsort(lengths, kind="stable")
    batch, longest = [], 0
    for i in order:
        length = int(lengths[i])
        if batch and max(longest, length) * (len(batch) + 1) > max_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(int(i))
        longest = max(longest, length)
    if batch:
        yield batch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the translation_bert data directory")
    parser.add_argument("--source-bert", required=True, help="the frozen source BERT")
    parser.add_argument("-s", "--source-lang", required=True)
    parser.add_argument("-t", "--target-lang", required=True)
    parser.add_argument("--splits", nargs="+", default=["train"])
    parser.add_argument("--layers", nargs="+", type=int, default=[-1],
                        help="BERT hidden layers to keep (-1 last; BERT-fused reads -1)")
    parser.add_argument("--out", required=True, help="cache directory")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="storage type (float16 halves the disk and page cache)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="BERT positions per batch")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO)
    manifest = build_cache(args.data, args.source_bert, args.source_lang, args.target_lang,
                           args.splits, args.layers, args.out, args.dtype, args.max_tokens,
                           args.threads)
    print(json.dumps({split: entry["seconds"] for split, entry in manifest["splits"].items()}))


if __name__ == "__main__":
    main()
