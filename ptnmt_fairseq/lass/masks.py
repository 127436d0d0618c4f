"""LaSS sub-network masks: magnitude pruning, the mask file, and the zero-shot combination.

Lin, Wu, Wang, Li. "Learning Language Specific Sub-network for Multilingual Machine Translation."
ACL 2021. A direction's sub-network is found by fine-tuning the multilingual model on that
direction alone and keeping, in each weight matrix, the weights of largest magnitude
(NLP-Playground/LaSS ``toolbox/generate_mask.py``: per tensor, the ``int(alpha * numel)`` smallest
|w| are pruned).

**Which tensors.** The weight matrices of the Linear layers: attention projections, feed-forward
layers and, by default, the decoder's output projection. Biases, LayerNorms and embeddings stay
shared by every direction. The authors' rule (keys with ``weight`` but without ``embed`` or
``layer_norm``) picks the same tensors; their flags that should exclude the tied output projection
(``--exclude-output-proj``, ``--no-mask-output-project``) have no effect, so their masks cover it.
We keep that (the paper's analysis finds the top layer the most language-specific) and offer
``shared_output_projection`` to leave it dense. The output projection is masked where it
projects; the embedding lookup that shares its matrix stays dense.

**The mask file** (``<DIR>/<src>-<tgt>.mask.npz``, numpy's npz, no pickle): ``header`` is UTF-8
JSON, ``bits`` the masks of every tensor in header order, flattened row-major, concatenated and
packed 8 per byte (``numpy.packbits``, big-endian bit order)::

    {"format": "ptnmt-lass-mask", "version": 1, "direction": "de-en", "alpha": 0.3,
     "source": "<fine-tuned checkpoint>",
     "tensors": [{"name": "encoder.layers.0.self_attn.k_proj.weight", "shape": [128, 128],
                  "kept": 11469}, ...]}

A mask that does not fit the model (a tensor missing, extra, or of another shape) is refused with
an error naming the direction, the file and the tensor.
"""
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

FORMAT, VERSION = "ptnmt-lass-mask", 1
SUFFIX = ".mask.npz"
OUTPUT_PROJECTION = "decoder.output_projection.weight"


class MaskError(ValueError):
    """A mask file that is missing, malformed, or does not fit the model."""


def mask_path(mask_dir, direction: str) -> Path:
    return Path(mask_dir) / f"{direction}{SUFFIX}"


def masked_weight_names(shapes: Mapping[str, Sequence[int]],
                        shared_output_projection: bool = False) -> List[str]:
    """The state-dict keys a LaSS mask covers: 2-D ``*.weight`` tensors that are neither
    embeddings nor LayerNorms (NLP-Playground/LaSS ``toolbox/generate_mask.py``), i.e. the Linear
    layers' weight matrices, the output projection unless ``shared_output_projection``.
    ``shapes``: state-dict key -> shape."""
    names = [name for name, shape in shapes.items()
             if name.endswith(".weight") and len(shape) == 2
             and "embed" not in name and "layer_norm" not in name]
    if shared_output_projection:
        names = [name for name in names if name != OUTPUT_PROJECTION]
    return sorted(names)


def magnitude_mask(weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Bool mask of ``weight``'s shape keeping its ``numel - int(alpha * numel)`` largest |w|
    (LaSS ``generate_mask.py``: the k = int(alpha * numel) smallest are pruned; ties are cut by
    position, so the count is exact). ``alpha`` in [0, 1): 0 keeps everything."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"the pruning ratio alpha must be in [0, 1), got {alpha}")
    flat = weight.detach().abs().flatten().float().cpu()
    keep = flat.numel() - int(alpha * flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices  # equal |w|: earlier first
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return mask.view(weight.shape)


@dataclass
class DirectionMask:
    """One direction's sub-network: state-dict key -> bool tensor (True: the weight is in it)."""

    direction: str
    masks: Dict[str, torch.Tensor]
    alpha: float
    source: str = ""

    @classmethod
    def from_state_dict(cls, direction, state_dict, alpha, source="",
                        shared_output_projection=False) -> "DirectionMask":
        """Prune the fine-tuned weights of ``state_dict`` (a fairseq checkpoint's ``model``)."""
        names = masked_weight_names({k: v.shape for k, v in state_dict.items()},
                                    shared_output_projection)
        if not names:
            raise MaskError(f"{source or direction}: no weight matrix to mask")
        return cls(direction, {n: magnitude_mask(state_dict[n], alpha) for n in names}, alpha,
                   str(source))

    def kept_fraction(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())

    def save(self, path):
        """Write the mask file atomically (a temporary file renamed into place)."""
        names = list(self.masks)
        header = {"format": FORMAT, "version": VERSION, "direction": self.direction,
                  "alpha": self.alpha, "source": self.source,
                  "tensors": [{"name": n, "shape": list(self.masks[n].shape),
                               "kept": int(self.masks[n].sum())} for n in names]}
        bits = np.packbits(np.concatenate([self.masks[n].flatten().numpy() for n in names]))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from others
            with os.fdopen(fd, "wb") as out:
                np.savez(out, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                         bits=bits)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path, direction: Optional[str] = None) -> "DirectionMask":
        """Read a mask file; MaskError names the file when it is not one, or holds another
        direction than ``direction``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode())
                bits = npz["bits"]
        except (OSError, ValueError, KeyError) as error:
            raise MaskError(f"{path} is not a LaSS mask file ({error})") from None
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise MaskError(f"{path}: format {header.get('format')!r} version "
                            f"{header.get('version')!r}, expected {FORMAT!r} version {VERSION}")
        if direction is not None and header["direction"] != direction:
            raise MaskError(f"{path} holds the mask of {header['direction']}, not {direction}")
        sizes = [int(np.prod(t["shape"])) for t in header["tensors"]]
        if bits.size != (sum(sizes) + 7) // 8:
            raise MaskError(f"{path}: {bits.size} bytes of mask bits for {sum(sizes)} weights "
                            "(a truncated or damaged file)")
        flat = np.unpackbits(bits, count=sum(sizes)).astype(bool)
        masks, start = {}, 0
        for tensor, size in zip(header["tensors"], sizes):
            masks[tensor["name"]] = torch.from_numpy(
                flat[start:start + size].reshape(tensor["shape"]).copy())
            start += size
            if int(masks[tensor["name"]].sum()) != tensor["kept"]:
                raise MaskError(f"{path}: tensor {tensor['name']} keeps "
                                f"{int(masks[tensor['name']].sum())} weights, its header says "
                                f"{tensor['kept']} (a damaged file)")
        return cls(header["direction"], masks, float(header["alpha"]), header.get("source", ""))

    def check_fits(self, shapes: Mapping[str, Sequence[int]], expected: Iterable[str], path):
        """MaskError naming the direction, ``path`` and the tensor unless this mask covers
        exactly the ``expected`` keys, each with the model's shape (``shapes``)."""
        expected = set(expected)
        missing, extra = sorted(expected - set(self.masks)), sorted(set(self.masks) - expected)
        where = f"LaSS mask of {self.direction} ({path})"
        if missing:
            raise MaskError(f"{where} has no mask for tensor {missing[0]}"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
                            "it was made for another model")
        if extra:
            raise MaskError(f"{where} masks tensor {extra[0]}, which the model does not mask "
                            "(another model, or --lass-shared-output-projection differs)")
        for name in sorted(expected):
            if tuple(self.masks[name].shape) != tuple(shapes[name]):
                raise MaskError(f"{where}: tensor {name} is {tuple(self.masks[name].shape)} in "
                                f"the mask but {tuple(shapes[name])} in the model")


def zero_shot_mask(direction: str, encoder_side: DirectionMask,
                   decoder_side: DirectionMask) -> DirectionMask:
    """The sub-network of an untrained direction X-Y: the encoder weights of X's sub-network
    into the pivot and the decoder weights (output projection included) of the pivot's into Y
    (Lin et al., ACL 2021, zero-shot translation: the encoder side of X->En with the decoder
    side of En->Y)."""
    masks = {name: (encoder_side if name.startswith("encoder.") else decoder_side).masks[name]
             for name in encoder_side.masks}
    return DirectionMask(direction, masks, encoder_side.alpha,
                         f"zero-shot: encoder of {encoder_side.direction}, "
                         f"decoder of {decoder_side.direction}")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def split_direction(direction: str) -> Tuple[str, str]:
    src, _, tgt = direction.partition("-")
    if not src or not tgt:
        raise ValueError(f"{direction!r} is not a direction SRC-TGT")
    return src, tgt
