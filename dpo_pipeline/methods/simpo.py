"""SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"): no reference model;
the implicit reward of a completion is its average log-probability per token, scaled by beta, and the loss asks the
chosen one's to beat the rejected one's by a margin gamma:

    L = -log sigmoid( beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma )

TRL implements it in its CPO trainer (`trl.experimental.cpo`, `loss_type="simpo"` with `cpo_alpha=0`, no behaviour
cloning term); here on the same pairs and sampled token ids as DPO (`SampledIdsCPOTrainer`: TRL's CPO trainer
re-tokenizes text, and would prepend BOS and append EOS to every completion). A dpo.py sweep entry
`method=simpo,beta=2.0,gamma=0.5` trains it; beta traces its curve.

This file and its registration are all there is to the method: the worked example of docs/architecture.md.
"""

from __future__ import annotations


from ..arguments.common import check_beta, trainer_config
from ..errors import PipelineError
from . import Method, number_key, register_method

DEFAULT_GAMMA = 0.5  # TRL's CPOConfig default (simpo_gamma)


def check(args, keys, where: str) -> None:
    """beta trains; the DPO-only settings are left at their defaults (the SimPO loss reads none of them)."""
    check_beta(args.beta)
    if list(args.loss_type) != ["sigmoid"] or args.label_smoothing:
        raise PipelineError(f"{where}: loss_type and label_smoothing are DPO settings SimPO does not read (its loss is "
                            "TRL's CPO trainer's simpo); drop them for method=simpo")


def prepare(args, keys):
    """TRL's CPOConfig with dpo.py's training settings (every field the two configs share) and SimPO's: the simpo
    loss, no behaviour-cloning term (cpo_alpha 0), beta and gamma."""
    from trl.experimental.cpo import CPOConfig

    return trainer_config(CPOConfig, args, leave_out=("label_smoothing",), loss_type="simpo", cpo_alpha=0.0,
                          simpo_gamma=keys.get("gamma", DEFAULT_GAMMA))


def trainer(*, model, args, train_dataset, eval_dataset, processing_class, peft_config, callbacks, keys, **unused):
    from ..trainers import SampledIdsCPOTrainer

    return SampledIdsCPOTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                processing_class=processing_class, peft_config=peft_config, callbacks=callbacks)


def length_normalised_margin(chosen, rejected, reference_chosen, reference_rejected, chosen_lengths, rejected_lengths):
    """SimPO's implicit reward margin per pair, without beta: the average log-probability per completion token of
    the chosen minus that of the rejected, log pi(y_w|x) / |y_w| - log pi(y_l|x) / |y_l| ([P] tensors in, [P]
    float64 out); no reference."""
    return chosen.double() / chosen_lengths.double() - rejected.double() / rejected_lengths.double()


METHOD = register_method(Method(
    name="simpo", order=10, title="SimPO", family="reference-free",
    label=lambda settings: f"SimPO β={settings['beta']:g} γ={settings.get('gamma', DEFAULT_GAMMA):g}",
    marker="P", linestyle=(0, (4, 1, 1, 1)), knob="beta", held_out_margin=length_normalised_margin,
    series=lambda settings: f"SimPO γ={settings.get('gamma', DEFAULT_GAMMA):g}",
    trainer=trainer, sweep_keys={"gamma": number_key("gamma")}, check=check, prepare=prepare, uses_reference=False,
    settings=lambda args, keys: {"beta": args.beta, "loss_type": ["simpo"], "label_smoothing": None,
                                 "gamma": keys.get("gamma", DEFAULT_GAMMA)},
    logged="rewards/",
))
