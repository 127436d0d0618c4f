"""Compare the LaSS sub-networks of several directions: mask overlap and where they differ.

    python -m ptnmt_fairseq.lass.analyze MASKS --out ANALYSIS [--directions de-en,en-de,...]

reads ``MASKS/<src>-<tgt>.mask.npz`` (all of them by default, sorted by name; format:
``ptnmt_fairseq/lass/masks.py``) and writes ``ANALYSIS/analysis.json`` (also printed as the last
line of stdout), ``ANALYSIS/iou.png`` (the overlap heatmap) and ``ANALYSIS/specific.png`` (the
language-specific fractions). The two measures are those of Lin, Wu, Wang, Li. "Learning Language
Specific Sub-network for Multilingual Machine Translation." ACL 2021, whose analysis finds that
similar languages share more of their sub-networks (mask similarity follows language family) and
that the top and bottom layers are the most language-specific:

* **IoU** of directions a and b: |M_a and M_b| / |M_a or M_b|, the weights counted over every
  masked tensor together (so a large matrix weighs by its size); 1 on the diagonal.
* **Language-specific fraction** of a group of weights, over all directions analysed: a weight
  kept by every direction is *shared*, one kept by some but not all is *language-specific*;
  fraction = language-specific / kept by any. Groups: each layer (``encoder 0`` ...
  ``decoder 5``, ``output projection``, bottom to top) and each module type (``encoder
  self-attention``, ``encoder feed-forward``, ``decoder self-attention``, ``decoder
  cross-attention``, ``decoder feed-forward``, ``output projection``).
"""
import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ptnmt_fairseq.lass.masks import (
    OUTPUT_PROJECTION, SUFFIX, DirectionMask, MaskError, mask_path,
)

LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.([^.]+)\.")
MODULES = {"self_attn": "self-attention", "encoder_attn": "cross-attention",
           "fc1": "feed-forward", "fc2": "feed-forward"}
# Module groups in network order; a mask holds only some of them (no cross-attention in an
# encoder, no output projection with --shared-output-projection).
MODULE_ORDER = ["encoder self-attention", "encoder feed-forward", "decoder self-attention",
                "decoder cross-attention", "decoder feed-forward", "output projection"]
OTHER = "other"  # a masked weight outside the Transformer's layers (e.g. decoder.project_out_dim)


def load_masks(mask_dir, directions: Optional[Sequence[str]] = None) -> List[DirectionMask]:
    """The masks of ``directions`` (default: every ``*.mask.npz`` in ``mask_dir``, sorted by
    name); MaskError names the directory when it holds none, the file when one is missing."""
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise MaskError(f"mask directory {mask_dir} does not exist")
    if not directions:
        directions = sorted(p.name[:-len(SUFFIX)] for p in mask_dir.glob(f"*{SUFFIX}"))
        if not directions:
            raise MaskError(f"mask directory {mask_dir} holds no LaSS mask (*{SUFFIX})")
    masks = []
    for direction in directions:
        path = mask_path(mask_dir, direction)
        if not path.is_file():
            raise MaskError(f"no LaSS mask for {direction}: {path} does not exist")
        masks.append(DirectionMask.load(path, direction))
    check_same_tensors(masks)
    return masks


def check_same_tensors(masks: Sequence[DirectionMask]):
    """MaskError naming both directions unless every mask covers the first one's tensors with
    the same shapes: masks of different models (or output-projection settings) do not compare."""
    first = masks[0]
    for other in masks[1:]:
        names, other_names = set(first.masks), set(other.masks)
        if names != other_names:
            name = sorted(names ^ other_names)[0]
            raise MaskError(f"the masks of {first.direction} and {other.direction} cover "
                            f"different tensors ({name} is in one only): masks of different models")
        for name in sorted(names):
            if first.masks[name].shape != other.masks[name].shape:
                raise MaskError(f"the masks of {first.direction} and {other.direction} differ in "
                                f"the shape of {name}: {tuple(first.masks[name].shape)} vs "
                                f"{tuple(other.masks[name].shape)}")


def iou_matrix(masks: Sequence[DirectionMask]) -> List[List[float]]:
    """D x D list of IoUs (in [0, 1]) of the ``masks``' kept weights, all tensors counted
    together; entry [i][j] compares ``masks[i]`` and ``masks[j]``."""
    check_same_tensors(masks)
    kept = [sum(int(m.sum()) for m in mask.masks.values()) for mask in masks]
    matrix = [[1.0] * len(masks) for _ in masks]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            # |a or b| = |a| + |b| - |a and b|: one pass over the weights per pair, not two.
            both = sum(int((masks[i].masks[n] & masks[j].masks[n]).sum()) for n in masks[i].masks)
            either = kept[i] + kept[j] - both
            # Two empty masks are the same (empty) sub-network.
            matrix[i][j] = matrix[j][i] = both / either if either else 1.0
    return matrix


def layer_of(name: str) -> str:
    """The layer group of a masked tensor: ``encoder 0``, ``decoder 1``, ``output projection``."""
    if name == OUTPUT_PROJECTION:
        return "output projection"
    match = LAYER.match(name)
    return f"{match[1]} {match[2]}" if match else OTHER


def module_of(name: str) -> str:
    """The module group of a masked tensor: ``encoder self-attention``, ``decoder
    cross-attention``, ``decoder feed-forward``, ``output projection``, ..."""
    if name == OUTPUT_PROJECTION:
        return "output projection"
    match = LAYER.match(name)
    if not match or match[3] not in MODULES:
        return OTHER
    return f"{match[1]} {MODULES[match[3]]}"


def layer_order(layer: str) -> Tuple[int, int]:
    """Sort key of a layer group, bottom to top (numeric: ``encoder 10`` after ``encoder 2``)."""
    side, _, index = layer.partition(" ")
    if side == "encoder":
        return 0, int(index)
    if side == "decoder":
        return 1, int(index)
    return (2, 0) if layer == "output projection" else (3, 0)


def module_order(module: str) -> int:
    return MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)


def specific_fractions(masks: Sequence[DirectionMask]) -> Tuple[Dict[str, float],
                                                                 Dict[str, float]]:
    """(by layer, by module): group name -> fraction in [0, 1] of the weights kept by some of
    ``masks`` that are not kept by all of them; layers bottom to top, modules in network order.
    A group no direction keeps anything of counts 0 (nothing in it is language-specific)."""
    check_same_tensors(masks)
    layers: Dict[str, List[int]] = {}  # group -> [language-specific, kept by any]
    modules: Dict[str, List[int]] = {}
    for name in masks[0].masks:
        count = torch.stack([mask.masks[name] for mask in masks]).sum(0)  # directions keeping it
        any_ = int((count > 0).sum())
        specific = any_ - int((count == len(masks)).sum())
        for groups, group in ((layers, layer_of(name)), (modules, module_of(name))):
            totals = groups.setdefault(group, [0, 0])
            totals[0] += specific
            totals[1] += any_

    def fractions(groups, order):
        return {group: specific / any_ if any_ else 0.0
                for group, (specific, any_) in sorted(groups.items(), key=lambda g: order(g[0]))}

    return fractions(layers, layer_order), fractions(modules, module_order)


def analyze(masks: Sequence[DirectionMask]) -> dict:
    """The report written to analysis.json; fractions rounded to 6 decimals. ``alpha``:
    direction -> the pruning ratio its mask was made with."""
    by_layer, by_module = specific_fractions(masks)
    return {"directions": [mask.direction for mask in masks],
            "alpha": {mask.direction: mask.alpha for mask in masks},
            "iou": [[round(v, 6) for v in row] for row in iou_matrix(masks)],
            "specific_by_layer": {k: round(v, 6) for k, v in by_layer.items()},
            "specific_by_module": {k: round(v, 6) for k, v in by_module.items()}}


def pyplot():
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq sets the root to DEBUG
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_iou(report: dict, path):
    """Heatmap of ``report["iou"]``, each cell annotated, directions on both axes."""
    plt = pyplot()
    directions, iou = report["directions"], report["iou"]
    size = 2.5 + 0.6 * len(directions)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(iou, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(directions)), directions, rotation=45, ha="right")
    ax.set_yticks(range(len(directions)), directions)
    for i, row in enumerate(iou):
        for j, value in enumerate(row):
            # Dark text on the light (high) end of viridis, light text on the dark end.
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="mask IoU")
    ax.set_title("LaSS sub-network overlap (IoU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_specific(report: dict, path):
    """Two bar charts: the language-specific fraction per layer and per module type."""
    plt = pyplot()
    tables = [("per layer (bottom to top)", report["specific_by_layer"]),
              ("per module type", report["specific_by_module"])]
    width = 4 + 0.35 * sum(len(table) for _, table in tables)
    fig, axes = plt.subplots(1, 2, figsize=(width, 4))
    for ax, (title, table) in zip(axes, tables):
        ax.bar(range(len(table)), list(table.values()))
        ax.set_xticks(range(len(table)), list(table), rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_ylabel("language-specific / kept by any")
    fig.suptitle(f"LaSS language-specific weights ({len(report['directions'])} directions)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mask_dir", help="mask directory (find_masks --out, --lass-mask-dir)")
    parser.add_argument("--out", required=True,
                        help="directory for analysis.json, iou.png and specific.png")
    parser.add_argument("--directions", default="",
                        help="comma-separated directions SRC-TGT (default: every mask file)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    directions = [d.strip() for d in args.directions.split(",") if d.strip()]
    try:
        masks = load_masks(args.mask_dir, directions)
    except MaskError as error:
        sys.exit(f"analyze: {error}")
    report = analyze(masks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_iou(report, out / "iou.png")
    plot_specific(report, out / "specific.png")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
