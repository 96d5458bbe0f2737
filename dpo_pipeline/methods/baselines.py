"""The frontier's series that dpo.py does not train: the SFT model and best-of-N sampling from it (eval.py),
Preferred-FT (sft.py on the chosen completions), and online RL with TRL's RLOO, GRPO and online DPO, with a learned
reward model or the true reward (rl.py). Registered for their labels, families and plot styles."""

from __future__ import annotations

from . import Method, log_ratio_margin, register_method


def rl_series(title: str):
    def series(settings) -> str:
        losses = settings.get("loss_type")
        reward = losses if isinstance(losses, str) else ",".join(losses or [])
        return f"{title} ({'true reward' if reward == 'classifier' else 'reward model'})"
    return series


def rl_label(title: str):
    def label(settings) -> str:  # loss_type holds the reward the run was trained on
        losses = settings.get("loss_type")
        reward = losses if isinstance(losses, str) else ",".join(losses or [])
        return f"{title} ({'true reward' if reward == 'classifier' else 'reward model'}) β={settings['beta']:g}"
    return label


SFT = register_method(Method(name="sft", title="SFT", family="sampling", label=lambda settings: "SFT", marker="*",
                             knob=None, order=-1))
BEST_OF_N = register_method(Method(name="best_of_n", title="best-of-N", family="sampling",
                                   label=lambda settings: "best-of-N", marker="x", linestyle="--", knob="N",
                                   order=90))
PREFERRED_FT = register_method(Method(name="preferred_ft", title="Preferred-FT", family="baseline",
                                      label=lambda settings: "Preferred-FT", marker="s", linestyle=":", knob=None,
                                      order=30))
def reward_linestyle(settings) -> str:
    """Solid for the true reward (the paper's PPO-GT), dashed for the learned reward model (its PPO)."""
    losses = settings.get("loss_type")
    return "-" if (losses if isinstance(losses, str) else ",".join(losses or [])) == "classifier" else "--"


RLOO = register_method(Method(name="rloo", title="RLOO", family="online RL", label=rl_label("RLOO"), marker="^",
                              linestyle=reward_linestyle, order=40, series=rl_series("RLOO")))
GRPO = register_method(Method(name="grpo", title="GRPO", family="online RL", label=rl_label("GRPO"), marker="v",
                              linestyle=reward_linestyle, order=41, series=rl_series("GRPO")))
# Online DPO (Guo et al. 2024): DPO's loss on pairs sampled from the policy at every step and ranked by the reward
# (rl.py); its implicit reward is DPO's, so its held-out margin is the log-ratio one.
ONLINE_DPO = register_method(Method(name="online_dpo", title="online DPO", family="online RL",
                                    label=rl_label("online DPO"), marker="h", linestyle=reward_linestyle, order=42,
                                    knob="beta", held_out_margin=log_ratio_margin, series=rl_series("online DPO")))
