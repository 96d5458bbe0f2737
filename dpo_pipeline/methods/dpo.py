"""DPO (Rafailov et al. 2023) with each of the losses TRL 1.16's `DPOTrainer` computes (a sweep entry's `loss_type`),
on the sampled token ids (`trainers.DPOTrainer`): IPO (Azar et al. 2023), SLiC's hinge loss (Zhao et al. 2023),
robust DPO (Chowdhury et al. 2024), NCA (Chen et al. 2024), APO (D'Oosterlinck et al. 2024), BCO (Jung et al. 2024),
DiscoPOP (Chan et al. 2024), ... Each is its own series on the frontier; DPO with the sigmoid loss draws the DPO curve.
"""

from __future__ import annotations

import dataclasses

from ..arguments.common import check_beta
from ..errors import PipelineError
from . import Method, log_ratio_margin, register_method

# The losses TRL 1.16's DPOTrainer computes (`DPOTrainer.dpo_loss`); any other name fails only after the first
# batch, with a traceback.
TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# Losses TRL's f-divergence variants apply to (`DPOTrainer.__init__`).
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
# DPOConfig options that only some of TRL's losses read (TRL 1.16's DPOTrainer): under any other loss a value away
# from the default would train a plain run under another run's name.
LOSS_SPECIFIC_OPTIONS = {
    "label_smoothing": ("robust", "exo_pair", "aot", "aot_unpaired"),
    "discopop_tau": ("discopop",),
}
# How each loss is named in plots and tables, and what its beta is called in its paper.
LOSS_NAMES = {"sigmoid": ("DPO", "β"), "ipo": ("IPO", "τ"), "hinge": ("SLiC (hinge)", "β"),
              "robust": ("robust DPO", "β"), "nca_pair": ("NCA", "β"), "apo_zero": ("APO-zero", "β"),
              "apo_down": ("APO-down", "β"), "bco_pair": ("BCO", "β"), "discopop": ("DiscoPOP", "β"),
              "exo_pair": ("EXO", "β"), "sppo_hard": ("SPPO (hard)", "β"),
              "sigmoid_norm": ("DPO (length-normalised)", "β")}
LINESTYLES = {"sigmoid": "-", "ipo": "--", "robust": "-.", "hinge": (0, (3, 1, 1, 1)), "nca_pair": (0, (1, 1)),
              "apo_zero": (0, (5, 2)), "bco_pair": (0, (3, 2, 1, 2))}


def trl_version() -> str:
    import trl

    return trl.__version__


def check_dpo_settings(args, keys=None, where: str = "the config") -> None:
    """The checks of a DPO config, the same for the flags and for each sweep entry, before anything is loaded: the
    settings TRL's DPOTrainer would refuse with a traceback (an unknown loss, an f-divergence with a loss that
    has none, label smoothing out of range, loss weights of another length), and the ones it would silently ignore
    (a silent no-op is a mislabelled run)."""
    check_beta(args.beta)
    unknown = [loss for loss in args.loss_type if loss not in TRL_LOSS_TYPES]
    if unknown:
        raise PipelineError(f"{where}: loss_type {','.join(unknown)} is not a loss of TRL's DPOTrainer; choose from "
                            f"{', '.join(TRL_LOSS_TYPES)}")
    if args.loss_weights is not None and len(args.loss_weights) != len(args.loss_type):
        raise PipelineError(f"{where}: loss_weights has {len(args.loss_weights)} weights for {len(args.loss_type)} "
                            "loss types")
    if args.f_divergence_type != "reverse_kl" and not set(args.loss_type) <= set(F_DIVERGENCE_LOSS_TYPES):
        raise PipelineError(f"{where}: f_divergence_type {args.f_divergence_type} works with the losses "
                            f"{', '.join(F_DIVERGENCE_LOSS_TYPES)} only, not {','.join(args.loss_type)}")
    if "robust" in args.loss_type and not 0.0 <= args.label_smoothing < 0.5:
        raise PipelineError(f"{where}: the robust loss needs 0 <= label_smoothing < 0.5, got {args.label_smoothing}")
    check_padding(args, where)
    if "exo_pair" in args.loss_type and args.label_smoothing == 0.0:
        raise PipelineError(f"{where}: the exo_pair loss needs label_smoothing above 0 (TRL suggests 1e-3)")
    from trl import DPOConfig

    defaults = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    for option, losses in LOSS_SPECIFIC_OPTIONS.items():
        value = getattr(args, option)
        if value != defaults[option] and not set(args.loss_type) & set(losses):
            raise PipelineError(f"{where}: {option}={value:g} has no effect with loss_type {','.join(args.loss_type)}; "
                                f"only {', '.join(losses)} use it (add loss_type=..., or drop {option})")
    if args.f_alpha_divergence_coef != defaults["f_alpha_divergence_coef"] and \
            args.f_divergence_type != "alpha_divergence":
        raise PipelineError(f"{where}: f_alpha_divergence_coef has no effect with f_divergence_type "
                            f"{args.f_divergence_type}; it needs f_divergence_type=alpha_divergence")
    for option in ("ref_model_mixup_alpha", "ref_model_sync_steps"):
        if getattr(args, option) != defaults[option] and not args.sync_ref_model:
            raise PipelineError(f"{where}: {option} has no effect without sync_ref_model true")


def check_padding(args, where: str) -> None:
    """padding_free: TRL 1.16's DPOTrainer warns and pads anyway; a run that asked for it would say what did not
    happen."""
    if args.padding_free:
        raise PipelineError(f"{where}: padding_free: TRL {trl_version()}'s DPOTrainer turns it off and pads anyway "
                            "(its warning says it is disabled for now); drop it, or set padding_free false")


def label(settings) -> str:
    losses = settings.get("loss_type") or "sigmoid"
    loss = losses if isinstance(losses, str) else ",".join(losses)
    name, knob = LOSS_NAMES.get(loss, (loss, "β"))
    text = f"{name} {knob}={settings['beta']:g}"
    if loss == "robust":
        text += f" ε={settings.get('label_smoothing') or 0:g}"
    return text


def series(settings) -> str:
    name, _ = LOSS_NAMES.get(loss_of(settings), (loss_of(settings), "β"))
    return name + (f" ε={settings.get('label_smoothing') or 0:g}" if loss_of(settings) == "robust" else "")


def loss_of(settings) -> str:
    losses = settings.get("loss_type") or "sigmoid"
    return losses if isinstance(losses, str) else ",".join(losses)


def trainer(*, keys, reference_cache=None, **kwargs):
    from ..trainers import DPOTrainer

    return DPOTrainer(reference_cache=reference_cache, **kwargs)


METHOD = register_method(Method(
    name="dpo", order=0, title="DPO", family="reference", label=label, marker="o", knob="beta",
    linestyle=lambda settings: LINESTYLES.get(loss_of(settings), (0, (1, 1))),
    held_out_margin=log_ratio_margin, on_the_dpo_curve=lambda settings: loss_of(settings) == "sigmoid", series=series,
    trainer=trainer, check=check_dpo_settings, uses_reference=True, logged="rewards/",
))
