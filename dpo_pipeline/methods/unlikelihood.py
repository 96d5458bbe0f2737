"""The unlikelihood baseline of the DPO paper's Figure 2 (Welleck et al. 2019): the chosen completions' likelihood up,
the rejected ones' `1 - p` per token up with weight alpha (`losses.unlikelihood_loss`), on TRL's DPOTrainer with only
the loss replaced (`trainers.UnlikelihoodTrainer`): the same pairs, token ids and training settings, no reference
model. A dpo.py sweep entry `method=unlikelihood,alpha=0.1` trains it (`configs/*/unlikelihood.yaml`)."""

from __future__ import annotations

import dataclasses

from ..arguments.common import replace_config
from ..errors import PipelineError
from . import Method, log_ratio_margin, number_key, register_method
from .dpo import check_padding

# DPOConfig options that only the DPO losses read: an unlikelihood run given one away from its default would train
# the same run under another name.
DPO_ONLY_OPTIONS = ("beta", "loss_type", "loss_weights", "label_smoothing", "f_divergence_type",
                    "f_alpha_divergence_coef", "discopop_tau", "ld_alpha", "use_weighting", "sync_ref_model",
                    "ref_model_mixup_alpha", "ref_model_sync_steps")


def check(args, keys, where: str) -> None:
    """Its weight is given, and none of the DPO losses' options is set away from DPOConfig's default (by the entry
    or the flags): the unlikelihood loss reads none of them, and such a run would be the same run under another
    name."""
    if "alpha" not in keys:
        raise PipelineError(f"{where}: method=unlikelihood needs its weight alpha, e.g. alpha=0.1")
    check_padding(args, where)
    from trl import DPOConfig

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(DPOConfig) if f.name in DPO_ONLY_OPTIONS}
    changed = [name for name in DPO_ONLY_OPTIONS if getattr(args, name) != defaults[name]]
    if changed:
        raise PipelineError(f"{where}: {', '.join(changed)} {'is a' if len(changed) == 1 else 'are'} DPO setting"
                            f"{'' if len(changed) == 1 else 's'} the unlikelihood loss does not read; drop "
                            f"{'it' if len(changed) == 1 else 'them'} for method=unlikelihood")


def prepare(args, keys):
    """No reference model (nothing precomputed either: `UnlikelihoodTrainer`), and no dropout."""
    return replace_config(args, precompute_ref_log_probs=True, disable_dropout=True)


def trainer(*, keys, reference_cache=None, **kwargs):
    from ..trainers import UnlikelihoodTrainer

    return UnlikelihoodTrainer(alpha=keys["alpha"], **kwargs)


METHOD = register_method(Method(
    name="unlikelihood", order=20, title="Unlikelihood", family="baseline",
    label=lambda settings: f"Unlikelihood α={settings['alpha']:g}", marker="D", linestyle=(0, (5, 1, 1, 1, 1, 1)),
    knob="alpha",
    # no implicit reward of its own: held-out accuracy ranks pairs by the log-ratio to the SFT model, as for DPO
    held_out_margin=log_ratio_margin,
    trainer=trainer, sweep_keys={"alpha": number_key("alpha")}, check=check, prepare=prepare, uses_reference=False,
    settings=lambda args, keys: {"beta": None, "loss_type": ["unlikelihood"], "label_smoothing": None, **keys},
    logged="logps/",
))
