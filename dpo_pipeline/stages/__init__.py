"""The pipeline's stages, one short module each, between the scripts above and the shared foundations below:

    sft.py            sft.py: SFT on text or conversations; the Preferred-FT baseline on the chosen completions
    preference_pairs.py   preference_pairs.py: sample, score with the task's reward, pair
    dpo.py            dpo.py: one DPO run per sweep entry
    reward_model.py   reward_model.py: a reward model learned from the pairs
    rl.py             rl.py: RLOO / GRPO from the SFT model, one run per sweep entry
    evaluate.py       eval.py: measure every model, store the results, write the report

The training stages give the sweep engine (`sweep.run_sweep`) a trainer factory and a summary; what is particular
to a task comes from the task registry (`tasks.get_task`).
"""
