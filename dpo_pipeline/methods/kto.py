"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"): no pairs in its loss, but
unpaired desirable and undesirable completions, each valued against a reference point z0 (a batch estimate of the KL
divergence of the policy from the reference model, through no gradient):

    L = lambda_D (1 - sigmoid(beta (r(x, y) - z0)))   for a desirable y,
        lambda_U (1 - sigmoid(beta (z0 - r(x, y))))   for an undesirable y,      r(x, y) = log pi(y|x) / pi_ref(y|x)

(Eq. (7) of the paper; lambda_D, lambda_U are `desirable_weight`, `undesirable_weight`). TRL's own `KTOTrainer` on
the same pairs as DPO (`trainers.KTOTrainer`): their unpaired examples, each distinct completion once, desirable or
undesirable by its pairs (`pair_building.unpaired_examples`, which gives the counts), with their sampled token ids.
The reference is the model the policy starts from (or ref_model_name_or_path), as TRL's trainer takes it. Its implicit
reward is DPO's, beta log pi/pi_ref, so held-out accuracy ranks pairs by DPO's log-ratio margin.

A dpo.py sweep entry `method=kto,beta=0.1` trains it (and `desirable_weight=1.33`, `undesirable_weight=...` weight
its two terms otherwise, TRL's defaults 1); beta traces its curve.
"""

from __future__ import annotations

import dataclasses

from ..arguments.common import check_beta, trainer_config
from ..errors import PipelineError
from . import Method, log_ratio_margin, number_key, register_method

DEFAULT_WEIGHT = 1.0  # TRL's KTOConfig default, desirable and undesirable alike
# dpo.py's settings TRL's KTOTrainer does not read: the DPO losses' options, the DPO collator's truncation and
# padding-free batches, and the order of the batches (KTO trains in its data's order, which its KL estimate needs):
# a run given one away from DPOConfig's default would be the same run under another name.
UNREAD_OPTIONS = ("loss_type", "loss_weights", "label_smoothing", "f_divergence_type", "f_alpha_divergence_coef",
                  "discopop_tau", "ld_alpha", "use_weighting", "truncation_mode", "padding_free",
                  "train_sampling_strategy")


def check(args, keys, where: str) -> None:
    """beta trains; the settings KTO does not read are left at DPOConfig's defaults; a device batch holds at least 2
    examples (TRL's KL estimate pairs each completion with another example's prompt of its batch)."""
    check_beta(args.beta)
    from trl import DPOConfig

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(DPOConfig) if f.name in UNREAD_OPTIONS}
    changed = [name for name in UNREAD_OPTIONS if getattr(args, name) != defaults[name]]
    if changed:
        raise PipelineError(f"{where}: {', '.join(changed)} {'is a setting' if len(changed) == 1 else 'are settings'} "
                            "TRL's KTOTrainer does not read (its own loss, sequential batches); drop "
                            f"{'it' if len(changed) == 1 else 'them'} for method=kto")
    if args.per_device_train_batch_size < 2:
        raise PipelineError(f"{where}: KTO needs per_device_train_batch_size >= 2 (its KL estimate pairs each "
                            f"completion with another prompt of its batch), got {args.per_device_train_batch_size}")


def prepare(args, keys):
    """TRL's KTOConfig with dpo.py's training settings (every field the two configs share) and KTO's: its loss, its
    weights, and its batches in the data's order (TRL's default, which its KL estimate needs)."""
    from trl import KTOConfig

    return trainer_config(KTOConfig, args, loss_type="kto", train_sampling_strategy="sequential",
                          desirable_weight=keys.get("desirable_weight", DEFAULT_WEIGHT),
                          undesirable_weight=keys.get("undesirable_weight", DEFAULT_WEIGHT))


def trainer(*, keys, reference_cache=None, **kwargs):
    from ..trainers import KTOTrainer

    return KTOTrainer(**kwargs)


def label(settings) -> str:
    text = f"KTO β={settings['beta']:g}"
    for key, symbol in (("desirable_weight", "λD"), ("undesirable_weight", "λU")):
        weight = settings.get(key, DEFAULT_WEIGHT)
        if weight != DEFAULT_WEIGHT:
            text += f" {symbol}={weight:g}"
    return text


METHOD = register_method(Method(
    name="kto", order=12, title="KTO", family="reference", label=label, marker=">", linestyle=(0, (1, 2, 4, 2)),
    knob="beta", held_out_margin=log_ratio_margin, trainer=trainer,
    sweep_keys={"desirable_weight": number_key("desirable_weight", above_zero=True),
                "undesirable_weight": number_key("undesirable_weight", above_zero=True)},
    check=check, prepare=prepare, uses_reference=True,
    settings=lambda args, keys: {"beta": args.beta, "loss_type": ["kto"], "label_smoothing": None,
                                 "desirable_weight": args.desirable_weight,
                                 "undesirable_weight": args.undesirable_weight},
    logged="rewards/",
))
