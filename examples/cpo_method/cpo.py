"""CPO (Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine
Translation") as a method of one's own, registered from this file alone: TRL's CPO trainer (`trl.experimental.cpo`)
with its default sigmoid loss, on the pairs' sampled token ids (the pipeline's `trainers.SampledIdsCPOTrainer`), no
reference model. Its loss is DPO's with the reference dropped, plus a behaviour-cloning term on the chosen completions
weighted by `cpo_alpha` (TRL's default 1, the paper's):

    L = -log sigmoid( beta log pi(y_w|x) - beta log pi(y_l|x) )  +  cpo_alpha (-log pi(y_w|x) / |y_w|)

(TRL's `CPOTrainer.cpo_loss` with `loss_type="sigmoid"`, the summed log-probs `average_log_prob=False`; the behaviour
cloning term is its `nll_loss`, the mean cross-entropy per chosen token). Its implicit reward, which TRL logs as
`rewards/chosen` and which ranks the held-out pairs, is beta times the summed log-probability of a completion,
beta log pi(y|x). Sweep entries `method=cpo,beta=0.1` (and `cpo_alpha=0.5` to weight the behaviour cloning otherwise)
choose it; beta traces its curve.
"""

from __future__ import annotations


from dpo_pipeline.arguments.common import check_beta, trainer_config
from dpo_pipeline.errors import PipelineError
from dpo_pipeline.methods import Method, number_key, register_method

DEFAULT_CPO_ALPHA = 1.0  # TRL's CPOConfig default


def check(args, keys, where: str) -> None:
    check_beta(args.beta)
    if list(args.loss_type) != ["sigmoid"] or args.label_smoothing:
        raise PipelineError(f"{where}: loss_type and label_smoothing are DPO settings CPO does not read (its loss is "
                            "TRL's CPO trainer's sigmoid); drop them for method=cpo")


def prepare(args, keys):
    """TRL's CPOConfig with every training setting dpo.py's config shares with it, its sigmoid loss and its behaviour
    cloning weight."""
    from trl.experimental.cpo import CPOConfig

    return trainer_config(CPOConfig, args, leave_out=("label_smoothing",), loss_type="sigmoid",
                          cpo_alpha=keys.get("cpo_alpha", DEFAULT_CPO_ALPHA))


def trainer(*, model, args, train_dataset, eval_dataset, processing_class, peft_config, callbacks, **unused):
    from dpo_pipeline.trainers import SampledIdsCPOTrainer

    return SampledIdsCPOTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                processing_class=processing_class, peft_config=peft_config, callbacks=callbacks)


def log_prob_margin(chosen, rejected, reference_chosen, reference_rejected, chosen_lengths, rejected_lengths):
    """CPO's implicit reward margin per pair, without beta: log pi(y_w|x) - log pi(y_l|x), the summed log-probs of the
    chosen minus the rejected completion ([P] tensors in, [P] float64 out); no reference."""
    return chosen.double() - rejected.double()


def label(settings) -> str:
    alpha = settings.get("cpo_alpha", DEFAULT_CPO_ALPHA)
    return f"CPO β={settings['beta']:g}" + ("" if alpha == DEFAULT_CPO_ALPHA else f" BC×{alpha:g}")


METHOD = register_method(Method(
    name="cpo", order=13, title="CPO", family="reference-free", label=label, marker="h", linestyle=(0, (6, 2)),
    knob="beta", held_out_margin=log_prob_margin, trainer=trainer, sweep_keys={"cpo_alpha": number_key("cpo_alpha")},
    check=check, prepare=prepare, uses_reference=False,
    settings=lambda args, keys: {"beta": args.beta, "loss_type": ["cpo"], "label_smoothing": None,
                                 "cpo_alpha": keys.get("cpo_alpha", DEFAULT_CPO_ALPHA)},
))
