"""``transformer_lass``: fairseq's Transformer with one sub-network mask per direction (LaSS).

Lin et al., ACL 2021. The parameters are fairseq's Transformer's, under the same state-dict keys,
so a multilingual ``transformer`` checkpoint loads as it is (``--finetune-from-model``). The masks
are files (``ptnmt_fairseq/lass/masks.py``) in ``--lass-mask-dir``, which the checkpoint records;
they are read when a direction is first used and checked against the model.

* **Training** (``translation_lass``): ``masked(direction)`` replaces each masked weight W by
  M ⊙ W for the duration of one forward and backward pass, so the gradient outside the mask is
  zero by the chain rule (NLP-Playground/LaSS ``patch_all_mask``: ``weight = mask * global_weight``
  each step). The tied output projection is masked where it projects; the embedding lookup that
  shares its matrix stays dense.
* **Decoding** (``fairseq-generate -s X -t Y``, ``fairseq-interactive``, the hub interface):
  ``prepare_for_inference_`` materialises M ⊙ W once for the direction, so every decoding step
  runs the dense code path on ready weights.
* **Zero-shot** X->Y without a mask of its own: the encoder side of X->pivot with the decoder
  side of pivot->Y (``--lass-zero-shot-pivot``, default en; ``masks.zero_shot_mask``).
"""
import contextlib
import logging
from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture, transformer_iwslt_de_en

from ptnmt_fairseq.lass.masks import (
    DirectionMask, MaskError, mask_path, masked_weight_names, split_direction, zero_shot_mask,
)

logger = logging.getLogger(__name__)


@register_model("transformer_lass")
class LaSSTransformerModel(TransformerModel):
    """fairseq's Transformer whose Linear weights are masked per direction (see module doc)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--lass-mask-dir", default="", metavar="DIR",
                            help="LaSS masks, DIR/<src>-<tgt>.mask.npz "
                                 "(python -m ptnmt_fairseq.lass.find_masks writes them)")
        parser.add_argument("--lass-shared-output-projection", action="store_true",
                            help="leave the output projection dense, shared by all directions "
                                 "(default: masked per direction, as the authors' code does)")
        parser.add_argument("--lass-zero-shot-pivot", default="en", metavar="LANG",
                            help="zero-shot X-Y: encoder mask of X-LANG, decoder mask of LANG-Y")

    @classmethod
    def build_model(cls, args, task):
        lass_architecture(args)
        model = super().build_model(args, task)
        model.setup_masks(args.lass_mask_dir, args.lass_shared_output_projection,
                          args.lass_zero_shot_pivot)
        if args.lass_mask_dir:  # the checkpoint records it: decoding finds it from any folder
            args.lass_mask_dir = str(model.mask_dir)
        return model

    def setup_masks(self, mask_dir, shared_output_projection=False, pivot="en"):
        self.mask_dir = Path(mask_dir).resolve() if mask_dir else None
        self.pivot = pivot
        self.shapes = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        self.masked_names = masked_weight_names(self.shapes, shared_output_projection)
        self.masked_modules = {name: self.get_submodule(name[:-len(".weight")])
                               for name in self.masked_names}
        self.loaded: Dict[str, DirectionMask] = {}
        self.on_device: Dict[str, Dict[str, torch.Tensor]] = {}
        self.active_direction = None
        self.materialised = None  # (direction, {name: the dense Parameter it replaced})

    # --- masks ------------------------------------------------------------------------------

    def mask(self, direction: str, zero_shot: bool = True) -> DirectionMask:
        """The sub-network of ``direction``: its mask file, or (``zero_shot``) for an untrained
        direction the zero-shot combination; MaskError naming the direction and the file when
        neither is there, or when a file does not fit this model."""
        if direction not in self.loaded:
            self.loaded[direction] = self.read_mask(direction, zero_shot)
        return self.loaded[direction]

    def read_mask(self, direction, zero_shot=True):
        if self.mask_dir is None:
            raise MaskError(f"no LaSS mask for {direction}: the model has no --lass-mask-dir")
        path = mask_path(self.mask_dir, direction)
        if path.is_file():
            return self.checked(DirectionMask.load(path, direction), path)
        if not zero_shot:
            raise MaskError(f"no LaSS mask for direction {direction}: {path} does not exist "
                            "(a trained or protected direction needs its own mask: python -m "
                            "ptnmt_fairseq.lass.find_masks)")
        src, tgt = split_direction(direction)
        encoder_side, decoder_side = f"{src}-{self.pivot}", f"{self.pivot}-{tgt}"
        sides = [mask_path(self.mask_dir, d) for d in (encoder_side, decoder_side)]
        if self.pivot in (src, tgt) or not all(p.is_file() for p in sides):
            raise MaskError(
                f"no LaSS mask for direction {direction}: {path} does not exist"
                + ("" if self.pivot in (src, tgt) else
                   f", nor does the zero-shot pair {sides[0].name} + {sides[1].name}")
                + " (python -m ptnmt_fairseq.lass.find_masks writes them)")
        logger.info(f"LaSS {direction}: zero-shot, encoder mask of {encoder_side}, "
                    f"decoder mask of {decoder_side}")
        return zero_shot_mask(
            direction, self.checked(DirectionMask.load(sides[0], encoder_side), sides[0]),
            self.checked(DirectionMask.load(sides[1], decoder_side), sides[1]))

    def checked(self, mask: DirectionMask, path) -> DirectionMask:
        mask.check_fits(self.shapes, self.masked_names, path)
        return mask

    def device_masks(self, direction) -> Dict[str, torch.Tensor]:
        """``direction``'s bool masks on the weights' device, made once (1 byte per weight)."""
        if direction not in self.on_device:
            self.on_device[direction] = {
                name: self.mask(direction).masks[name].to(module._parameters["weight"].device)
                for name, module in self.masked_modules.items()}
        return self.on_device[direction]

    def union_mask(self, directions) -> Dict[str, torch.Tensor]:
        """Key -> the weights in any of ``directions``' sub-networks, on the weights' device
        (one direction: its cached masks, not a copy)."""
        masks = [self.device_masks(d) for d in directions]
        if len(masks) == 1:
            return masks[0]
        return {name: torch.stack([m[name] for m in masks]).any(0) for name in masks[0]}

    # --- training: masked forward and backward ----------------------------------------------

    @contextlib.contextmanager
    def masked(self, direction: str):
        """Within the block every masked weight W reads as M ⊙ W (M: ``direction``'s mask), so
        the gradient outside M is zero. The Parameters stay the same objects (optimizer, DDP)."""
        masks = self.device_masks(direction)
        swapped = []
        try:
            for name, module in self.masked_modules.items():
                weight = module._parameters.pop("weight")
                swapped.append((module, weight))
                module.weight = weight * masks[name]  # bool promotes to the weight's dtype
            self.active_direction = direction
            yield self
        finally:
            self.active_direction = None
            for module, weight in swapped:
                del module.weight
                module._parameters["weight"] = weight

    def forward(self, *args, **kwargs):
        if self.active_direction is None and self.materialised is None:
            raise RuntimeError(
                "transformer_lass runs one direction's sub-network: train with --task "
                "translation_lass, decode with -s SRC -t TGT")
        return super().forward(*args, **kwargs)

    # --- decoding: the masked weights, once ---------------------------------------------------

    def materialise(self, direction: str):
        """Replace each masked weight by a constant M ⊙ W for ``direction`` (the dense
        Parameters are kept aside, so another direction can be materialised later). A tied
        output projection gets its own masked copy: the embedding lookup stays dense."""
        if self.materialised is not None and self.materialised[0] == direction:
            return
        mask = self.mask(direction)
        dense = self.materialised[1] if self.materialised else {
            name: module._parameters["weight"] for name, module in self.masked_modules.items()}
        with torch.no_grad():
            for name, module in self.masked_modules.items():
                current = module._parameters["weight"]  # its device and dtype (hub.cuda() moved it)
                weight = dense[name].to(current.device, current.dtype)
                # requires_grad as the dense weight: a frozen output projection measured 15-20%
                # slower beam search on CPU (torch 2.9) than a trainable one of the same values
                module._parameters["weight"] = nn.Parameter(
                    weight * mask.masks[name].to(weight.device),
                    requires_grad=dense[name].requires_grad)
        self.materialised = (direction, dense)
        logger.info(f"LaSS: decoding {direction} with {mask.kept_fraction():.1%} of the masked "
                    f"weights ({mask.source or 'mask file'})")

    def prepare_for_inference_(self, cfg):
        super().prepare_for_inference_(cfg)
        task = getattr(cfg, "task", None)
        src, tgt = getattr(task, "source_lang", None), getattr(task, "target_lang", None)
        if not (src and tgt):
            raise ValueError("transformer_lass decodes one direction's sub-network: pass "
                             "-s SRC -t TGT (hub: source_lang=..., target_lang=...)")
        self.materialise(f"{src}-{tgt}")


@register_model_architecture("transformer_lass", "transformer_lass")
def lass_architecture(args):
    args.lass_mask_dir = getattr(args, "lass_mask_dir", "")
    args.lass_shared_output_projection = getattr(args, "lass_shared_output_projection", False)
    args.lass_zero_shot_pivot = getattr(args, "lass_zero_shot_pivot", "en")
    base_architecture(args)


@register_model_architecture("transformer_lass", "transformer_lass_iwslt_de_en")
def lass_iwslt_architecture(args):
    """The authors' IWSLT setting (NLP-Playground/LaSS configs: transformer_iwslt_de_en)."""
    transformer_iwslt_de_en(args)
    lass_architecture(args)
