"""``translation_lass``: the multilingual task (``translation_multi_langtok``) trained with LaSS's
sub-network masks, one direction per batch.

Lin et al., ACL 2021; NLP-Playground/LaSS ``mask_translation_multi_simple_epoch`` (batches of one
direction, the mask picked from the batch's languages).

**Only weights inside the mask move.** The masked forward gives weights outside the batch's mask a
zero gradient, but Adam still moves them with the momentum that other directions left (the
pitfall of the authors' code). So around every optimizer step the weights outside the step's
masks are saved and put back: after the step, W = where(M, W_stepped, W_before), with M the union
of the masks of every direction in the update (all its micro-batches, ``--update-freq``). A tied
output projection is also the embedding table, which every direction reads densely: it is
updated as a shared parameter, its mask acting in the forward pass only.

Batches of one direction are interleaved round-robin across directions (training shuffles them
anyway; validation reads them in order and may stop at ``--max-valid-steps``).

**Two or more ranks** hold batches of different directions in one step. Their gradients are
summed by DDP as usual (each rank's is zero outside its own mask); before the step the ranks
all-reduce which directions the update holds (a 0/1 vector over ``--lang-pairs``, MAX), so
every rank restores outside the same union M and the replicas stay identical.

**A new language pair** (``--lass-protected-pairs``): the existing directions' sub-networks must
not change. Only the Linear weights inside the new direction's mask and outside the union of the
protected directions' masks are trained; biases, LayerNorms and embeddings (the tied output
projection with them) are frozen. The protected directions' outputs stay bit-identical.
"""
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset
from fairseq.tasks import register_task

from ptnmt_fairseq.common.multilingual.task import (
    MultiLangTokConfig, MultiLangTokTask, parse_lang_pairs,
)
from ptnmt_fairseq.lass.model import LaSSTransformerModel

logger = logging.getLogger(__name__)


@dataclass
class LaSSConfig(MultiLangTokConfig):
    lass_protected_pairs: str = field(default="", metadata={
        "help": "adding a language pair: directions (e.g. en-de,de-en) whose sub-networks must "
                "stay as they are; only the --lang-pairs weights outside their masks train"})


class OneDirectionBatches(SampledMultiDataset):
    """fairseq's temperature-sampled mix of directions, batched one direction at a time; each
    batch carries ``direction`` ("de-en")."""

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1):
        indices = np.asarray(indices)
        owner = np.searchsorted(self.cumulated_sizes, indices, side="right")
        per_direction = [super(OneDirectionBatches, self).batch_by_size(
            indices[owner == i], max_tokens, max_sentences, required_batch_size_multiple)
            for i in np.unique(owner)]
        # Round-robin across directions: validation reads its batches in order and may stop
        # after --max-valid-steps, so every direction must come early (training shuffles them).
        return [batch for group in itertools.zip_longest(*per_direction) for batch in group
                if batch is not None]

    def collater(self, samples, **extra_args):
        if not samples:
            return None
        owners = {i for i, _ in samples}
        if len(owners) != 1:
            mixed = sorted(self.keys[i] for i in owners)
            raise ValueError(f"a LaSS batch mixes directions {mixed}")
        i = owners.pop()
        batch = self.datasets[i].collater([s for _, s in samples])
        batch["direction"] = self.keys[i]
        return batch


@register_task("translation_lass", dataclass=LaSSConfig)
class LaSSTask(MultiLangTokTask):
    one_language_hint = "generate one direction at a time (-s SRC -t TGT)"

    def __init__(self, cfg: LaSSConfig, dictionary, spm):
        super().__init__(cfg, dictionary, spm)
        self.protected = [f"{s}-{t}" for s, t in parse_lang_pairs(cfg.lass_protected_pairs)] \
            if cfg.lass_protected_pairs else []
        self.guard = None

    def mix(self, directions, ratios, epoch, split, training):
        return OneDirectionBatches(directions, sampling_ratios=ratios, seed=self.cfg.seed,
                                   epoch=epoch, split=split, shuffle=training)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, LaSSTransformerModel):
            raise ValueError(f"--task translation_lass needs a LaSS model (--arch "
                             f"transformer_lass), not {type(model).__name__}")
        training = [f"{s}-{t}" for s, t in self.lang_pairs]
        for direction in training + self.protected:  # every mask checked before training starts
            model.mask(direction, zero_shot=False)
        overlap = set(training) & set(self.protected)
        if overlap:
            raise ValueError(f"--lass-protected-pairs {sorted(overlap)} are also trained "
                             "(--lang-pairs): a protected direction cannot change")
        if self.protected:
            freeze_all_but_masked_weights(model)
        self.guard = MaskedUpdate(model, training, self.protected)
        if self.protected:
            self.check_new_subnetwork(model, training)
        return model

    def check_new_subnetwork(self, model, training):
        """Log how many weights the new directions own; an error when they own none (training
        would change nothing)."""
        new = model.union_mask(training)
        own = sum(int((new[n] & ~self.guard.protected[n]).sum()) for n in new)
        total = sum(m.numel() for m in new.values())
        if own == 0:
            raise ValueError(f"{','.join(training)}: every weight of their masks is in a protected "
                             f"direction's mask ({','.join(self.protected)}), so nothing would "
                             "train; find their masks with a larger --alpha")
        logger.info(f"LaSS new pair {','.join(training)}: {own} of {total} masked weights "
                    f"({own / total:.1%}) are theirs alone and train; the rest is frozen")

    def batch_direction(self, sample):
        direction = sample.get("direction") if sample else None
        if direction is None:
            if not (self.cfg.source_lang and self.cfg.target_lang):
                raise ValueError("a LaSS batch without its direction: load data with "
                                 "--lang-pairs, or -s SRC -t TGT")
            direction = f"{self.cfg.source_lang}-{self.cfg.target_lang}"
        return direction

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        direction = self.batch_direction(sample)
        self.guard.attach(optimizer)
        if not ignore_grad:  # a dummy batch (DDP, an exhausted rank) updates nothing
            self.guard.note(direction, update_num)
        with unwrap(model).masked(direction):
            return super().train_step(sample, model, criterion, optimizer, update_num,
                                      ignore_grad)

    def valid_step(self, sample, model, criterion):
        with unwrap(model).masked(self.batch_direction(sample)):
            return super().valid_step(sample, model, criterion)


def unwrap(model) -> LaSSTransformerModel:
    """The LaSS model inside fairseq's DDP wrappers."""
    while not isinstance(model, LaSSTransformerModel) and hasattr(model, "module"):
        model = model.module
    return model


def freeze_all_but_masked_weights(model: LaSSTransformerModel):
    """requires_grad=False on every parameter but the masked Linear weights; a masked weight
    tied to an embedding (the shared output projection) is frozen with the embedding."""
    trainable = {id(m._parameters["weight"]) for m in model.masked_modules.values()}
    for name, param in model.named_parameters():  # a tied matrix is listed once, as embedding
        if "embed" in name or id(param) not in trainable:
            param.requires_grad_(False)


class MaskedUpdate:
    """Keeps every weight outside the current update's masks at its value across the optimizer
    step (Adam momentum would move it), identically on every rank (module doc)."""

    def __init__(self, model: LaSSTransformerModel, directions, protected=()):
        self.model, self.directions = model, list(directions)
        self.protected = model.union_mask(list(protected)) if protected else None
        self.step_directions, self.saved, self.attached, self.update_num = set(), [], None, None
        # The tied embedding is used densely by every direction (the lookup): it is updated as
        # a shared parameter; its output-projection mask acts in the forward pass only.
        self.shared = {id(p) for name, p in model.named_parameters() if "embed" in name}

    def attach(self, optimizer):
        """Hook the torch optimizer inside fairseq's (once per optimizer object)."""
        from fairseq.optim.fp16_optimizer import (
            _FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin,
        )
        if isinstance(optimizer, (_FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin)):
            raise ValueError("LaSS masked updates act on the model's fp32 weights: train "
                             "without --fp16/--bf16")
        inner = optimizer.optimizer
        if self.attached is inner:
            return
        inner.register_step_pre_hook(lambda *_: self.before_step())
        inner.register_step_post_hook(lambda *_: self.after_step())
        self.attached = inner

    def note(self, direction, update_num):
        """``direction`` is in update ``update_num`` (a new number: an update whose step was
        skipped, e.g. an overflow, leaves its directions behind)."""
        if update_num != self.update_num:
            self.step_directions, self.update_num = set(), update_num
        self.step_directions.add(direction)

    def update_directions(self):
        """The directions of this update on all ranks (all-reduced 0/1 vector, MAX)."""
        device = next(self.model.parameters()).device  # NCCL reduces device tensors only
        present = torch.tensor([float(d in self.step_directions) for d in self.directions],
                               device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from fairseq.distributed import utils as distributed_utils

            present = distributed_utils.all_reduce(
                present, group=distributed_utils.get_data_parallel_group(), op="max")
        return [d for d, p in zip(self.directions, present.cpu().tolist()) if p > 0]

    def updatable(self):
        """Key -> the weights this step may change."""
        directions = self.update_directions()
        self.step_directions = set()
        if not directions:
            return {name: torch.zeros_like(m)
                    for name, m in self.model.union_mask(self.directions[:1]).items()}
        keep = self.model.union_mask(directions)
        if self.protected is not None:
            keep = {name: m & ~self.protected[name] for name, m in keep.items()}
        return keep

    def before_step(self):
        keep = self.updatable()
        self.saved = []
        for name, module in self.model.masked_modules.items():
            weight = module._parameters["weight"]
            if weight.requires_grad and id(weight) not in self.shared:
                self.saved.append((weight, keep[name], weight.detach().clone()))

    def after_step(self):
        with torch.no_grad():
            for weight, keep, before in self.saved:
                weight.copy_(torch.where(keep, weight, before))
        self.saved = []
