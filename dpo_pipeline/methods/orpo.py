"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"): TRL's ORPO trainer
(`trl.experimental.orpo`) on the pairs' sampled token ids (`trainers.SampledIdsORPOTrainer`), no reference model. Its
loss is the SFT loss on the chosen completions plus beta times an odds-ratio term,

    L = -log pi(y_w|x) / |y_w|  -  beta log sigmoid( log odds(y_w|x) - log odds(y_l|x) ),
    log odds(y|x) = a - log(1 - exp(a)),   a = log pi(y|x) / |y|   (the average log-probability per token)

and its implicit reward, which ranks the held-out pairs, is the log odds of a completion. Sweep entries
`method=orpo,beta=0.1` choose it; beta traces its curve.
"""

from __future__ import annotations


from ..arguments.common import check_beta, trainer_config
from ..errors import PipelineError
from . import Method, register_method


def check(args, keys, where: str) -> None:
    check_beta(args.beta)
    if list(args.loss_type) != ["sigmoid"] or args.label_smoothing:
        raise PipelineError(f"{where}: loss_type and label_smoothing are DPO settings ORPO does not read; drop them")


def prepare(args, keys):
    """TRL's ORPOConfig with every training setting dpo.py's config shares with it."""
    from trl.experimental.orpo import ORPOConfig

    return trainer_config(ORPOConfig, args, leave_out=("loss_type", "label_smoothing"))


def trainer(*, model, args, train_dataset, eval_dataset, processing_class, peft_config, callbacks, **unused):
    from ..trainers import SampledIdsORPOTrainer

    return SampledIdsORPOTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                 processing_class=processing_class, peft_config=peft_config, callbacks=callbacks)


def log_odds_margin(chosen, rejected, reference_chosen, reference_rejected, chosen_lengths, rejected_lengths):
    """ORPO's implicit reward margin per pair: log odds(y_w|x) - log odds(y_l|x), from the summed log-probs and the
    lengths ([P] tensors in, [P] float64 out); no reference."""
    import torch

    def log_odds(logps, lengths):
        average = logps.double() / lengths.double()
        return average - torch.log1p(-torch.exp(average).clamp(max=1 - 1e-12))

    return log_odds(chosen, chosen_lengths) - log_odds(rejected, rejected_lengths)


METHOD = register_method(Method(
    name="orpo", order=11, title="ORPO", family="reference-free",
    label=lambda settings: f"ORPO β={settings['beta']:g}", marker="p", linestyle=(0, (2, 1)), knob="beta",
    held_out_margin=log_odds_margin, trainer=trainer, check=check, prepare=prepare, uses_reference=False,
    settings=lambda args, keys: {"beta": args.beta, "loss_type": ["orpo"], "label_smoothing": None},
))
