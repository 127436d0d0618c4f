"""``rate_scheduled``: CTNMT's rate-scheduled learning (Yang et al., AAAI 2020, Sec. 3.3).

BERT's learning rate is eta_lm = rho(t) * eta_nmt (Eq. 8-9), with eta_nmt fairseq's
``inverse_sqrt`` schedule and rho the slanted triangular rate of Eq. (10):

    rho(t) = t / T'                       t <= T'
             1 - (t - T') / (T - T')      T' <= t < T
             0                            t >= T          (paper: T' = 10000, T = 20000)

or a constant (Table 5: rho = 1 plain fine-tuning, 0.01, 0). It scales the *learning rate*, as
the paper says; bytedance/neurst scales BERT's gradients instead, which Adam's normalisation
mostly cancels. BERT's weights (tagged by the ``ctnmt`` model) are moved into a second
parameter group of the optimizer when the scheduler is built, before any optimizer state is
loaded, so checkpoints hold both groups; rho depends on the update count only, so a resumed run
continues the schedule. The rate is logged as ``bert_lr``.
"""
from dataclasses import dataclass, field

from fairseq import metrics
from fairseq.optim.lr_scheduler import register_lr_scheduler
from fairseq.optim.lr_scheduler.inverse_square_root_schedule import (
    InverseSquareRootLRScheduleConfig, InverseSquareRootSchedule,
)

BERT_PARAM_GROUP = "bert"  # the tag set by the ctnmt model on BERT's parameters


@dataclass
class RateScheduledConfig(InverseSquareRootLRScheduleConfig):
    bert_rate: str = field(default="slanted", metadata={
        "help": "rho of BERT's learning rate: 'slanted' (Eq. 10) or a constant, e.g. 0.01"})
    bert_rate_warmup_updates: int = field(default=10000, metadata={
        "help": "T' of Eq. (10): updates over which rho rises to 1 (paper: 10000)"})
    bert_rate_total_updates: int = field(default=20000, metadata={
        "help": "T of Eq. (10): rho is 0 from this update on (paper: 20000)"})


def slanted_triangular_rate(t, warmup, total):
    """Eq. (10), CTNMT: rho at update ``t`` for T' = ``warmup``, T = ``total``."""
    if t < warmup:
        return t / warmup
    if t < total:
        return 1.0 - (t - warmup) / (total - warmup)
    return 0.0


def split_bert_group(optimizer):
    """Move the parameters tagged ``param_group == "bert"`` out of the torch optimizer's single
    group into a second one with the same options; return its index, or None when there are
    none. ValueError when fairseq flattened the parameters (--fp16/--bf16 without
    --fp16-no-flatten-grads), which leaves no tensor to tag."""
    torch_optimizer = optimizer.optimizer
    groups = torch_optimizer.param_groups
    if len(groups) != 1:
        raise ValueError(f"rate_scheduled expects the optimizer's one parameter group, found "
                         f"{len(groups)}")
    params = groups[0]["params"]
    if isinstance(getattr(optimizer, "fp32_params", None), dict):  # FP16Optimizer, flattened
        raise ValueError("rate_scheduled: --fp16 flattened every weight into one tensor, "
                         "so BERT's cannot get its own learning rate; add "
                         "--fp16-no-flatten-grads")
    bert = [p for p in params if getattr(p, "param_group", None) == BERT_PARAM_GROUP]
    if not bert:
        return None
    groups[0]["params"] = [p for p in params if getattr(p, "param_group", None) != BERT_PARAM_GROUP]
    torch_optimizer.add_param_group(
        dict({k: v for k, v in groups[0].items() if k != "params"}, params=bert))
    return len(groups) - 1


@register_lr_scheduler("rate_scheduled", dataclass=RateScheduledConfig)
class RateScheduledSchedule(InverseSquareRootSchedule):
    """``inverse_sqrt`` for the NMT weights, rho(t) times it for BERT's (see module docstring)."""

    def __init__(self, cfg: RateScheduledConfig, optimizer):
        super().__init__(cfg, optimizer)
        self.constant_rate = None if cfg.bert_rate == "slanted" else parse_rate(cfg.bert_rate)
        if self.constant_rate is None and not (
                0 < cfg.bert_rate_warmup_updates < cfg.bert_rate_total_updates):
            raise ValueError(f"--bert-rate-warmup-updates {cfg.bert_rate_warmup_updates} and "
                             f"--bert-rate-total-updates {cfg.bert_rate_total_updates}: Eq. (10) "
                             "needs 0 < T' < T")
        self.bert_group = split_bert_group(optimizer)
        if self.bert_group is None and self.constant_rate != 0:
            raise ValueError("rate_scheduled found no trainable BERT weights: the model is not "
                             "ctnmt, or BERT is frozen (--freeze-bert, or --bert-fusion none); "
                             "use inverse_sqrt")
        self.apply_rate(0)

    def rho(self, num_updates):
        if self.constant_rate is not None:
            return self.constant_rate
        return slanted_triangular_rate(num_updates, self.cfg.bert_rate_warmup_updates,
                                       self.cfg.bert_rate_total_updates)

    def step_update(self, num_updates):
        lr = super().step_update(num_updates)
        self.apply_rate(num_updates)
        return lr

    def apply_rate(self, num_updates):
        """Eq. (9), CTNMT: eta_lm = rho(t) * eta_nmt."""
        if self.bert_group is None:
            return
        groups = self.optimizer.optimizer.param_groups
        groups[self.bert_group]["lr"] = self.rho(num_updates) * groups[0]["lr"]
        metrics.log_scalar("bert_lr", groups[self.bert_group]["lr"], weight=0, priority=310)


def parse_rate(text):
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"--bert-rate {text!r}: 'slanted' or a number") from None
    if rate < 0:
        raise ValueError(f"--bert-rate {rate}: must be at least 0")
    return rate
