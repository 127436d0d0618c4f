"""Sizes, ordering and length filtering for datasets of (source, target) pairs.

fairseq's ``LanguagePairDataset`` has these but needs binarised data; the raw-text and speech
datasets of the suite keep ``src_sizes``/``tgt_sizes`` arrays and get the same behaviour here:
batches by length (source, then target), shuffled within equal lengths when ``shuffle``.
"""
import numpy as np
from fairseq.data import FairseqDataset, data_utils


class PairedSizesDataset(FairseqDataset):
    src_sizes: np.ndarray
    tgt_sizes: np.ndarray
    shuffle: bool = True

    def num_tokens(self, index):
        return int(max(self.src_sizes[index], self.tgt_sizes[index]))

    def num_tokens_vec(self, indices):
        return np.maximum(self.src_sizes[indices], self.tgt_sizes[indices])

    def size(self, index):
        return (int(self.src_sizes[index]), int(self.tgt_sizes[index]))

    @property
    def sizes(self):
        return np.vstack((self.src_sizes, self.tgt_sizes)).T

    def ordered_indices(self):
        order = np.random.permutation(len(self)) if self.shuffle else np.arange(len(self))
        order = order[np.argsort(self.tgt_sizes[order], kind="mergesort")]
        return order[np.argsort(self.src_sizes[order], kind="mergesort")]

    def filter_indices_by_size(self, indices, max_sizes):
        return data_utils.filter_paired_dataset_indices_by_size(
            self.src_sizes, self.tgt_sizes, indices, max_sizes)
