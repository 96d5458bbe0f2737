"""The paper's online RL baselines: a reward model learned from the pairs with TRL's RewardTrainer, and RLOO from the
SFT model with the learned and with the true reward, KL-regularised, on the frontier beside DPO. The scripts run as
users run them (subprocesses), and a killed run resumes to the same weights (bad input: test_bad_input.py)."""

import csv
import json

import pytest

import rl
from dpo_pipeline.cli import run_script
from dpo_pipeline.errors import PipelineError
from dpo_pipeline.stages.rl import classifier_reward_scale
from tests.conftest import TRAINING_ON_CPU
from tests.helpers import launch, run_command


def reward_model_args(assets, pairs, out):
    return ["--model_name_or_path", assets["sft_model"], "--pairs_file", pairs / "pairs.jsonl",
            "--eval_pairs_file", pairs / "pairs.jsonl", "--output_dir", out, "--max_steps", 6,
            "--per_device_train_batch_size", 8, "--learning_rate", 5e-3, "--max_length", 64, "--save_steps", 3,
            "--report_to", "none", *TRAINING_ON_CPU]


def rl_args(assets, pairs, out, reward_model, *sweep):
    return ["--model_name_or_path", assets["sft_model"], "--pairs_file", pairs / "pairs.jsonl",
            "--classifier_name_or_path", assets["classifier"], "--classifier_max_length", 64,
            "--reward_model_path", reward_model, "--output_dir", out, "--sweep", *sweep, "--max_steps", 4,
            "--save_steps", 2, "--num_generations", 4, "--per_device_train_batch_size", 8,
            "--max_completion_length", 8, "--learning_rate", 5e-3, "--logging_steps", 1, "--report_to", "none",
            *TRAINING_ON_CPU]


@pytest.fixture(scope="module")
def reward_model(tiny_assets, pairs_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("reward") / "reward_model"
    run_command("reward_model.py", *reward_model_args(tiny_assets, pairs_dir, out), cwd=out.parent)
    return out


def test_the_reward_model_learns_the_pairs_and_its_heldout_accuracy_is_measured(reward_model, pairs_dir):  # noqa: F811
    """The reported pairwise accuracy is recomputed from the saved model on the sampled token ids: P(chosen scores
    above rejected); its scores are standardised on SFT samples as recorded (mean 0, sd 1 on them)."""
    import statistics

    from dpo_pipeline.models import LearnedRewardModel

    summary = json.loads((reward_model / "stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 6
    scorer = LearnedRewardModel.load(str(reward_model), device="cpu")
    pairs = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    chosen, rejected = ([scorer.raw_scores([pair["prompt_ids"] + pair[key]])[0] for pair in pairs]
                        for key in ("chosen_ids", "rejected_ids"))
    assert summary["heldout_pairs"] == len(pairs)
    assert summary["heldout_accuracy"] == pytest.approx(sum(c > r for c, r in zip(chosen, rejected)) / len(pairs),
                                                        abs=1e-6)
    assert 0 < summary["validation_pairs"] < len(pairs)
    distinct = {tuple(pair["prompt_ids"] + pair[key]) for pair in pairs for key in ("chosen_ids", "rejected_ids")}
    assert summary["reward_scale_samples"] == len(distinct)
    scores = scorer.score([list(ids) for ids in distinct])  # every SFT sample of the pairs: mean 0, sd 1
    assert statistics.fmean(scores) == pytest.approx(0, abs=1e-4)
    assert statistics.pstdev(scores) == pytest.approx(1, abs=1e-4)


def test_the_reward_model_scores_token_ids_and_sees_a_sampled_eos(reward_model, tiny_assets):  # noqa: F811
    """The same text with and without a sampled EOS: different token sequences, different scores, and the EOS id is
    in the reward model's input at the position it scores (its padding token is its own, not EOS). Through the RL
    reward function, completion_ids decide the score, not the decoded text."""
    import torch

    from dpo_pipeline.models import LearnedRewardModel, load_tokenizer
    from dpo_pipeline.stages.rl import LearnedReward

    scorer = LearnedRewardModel.load(str(reward_model), device="cpu")
    tokenizer = load_tokenizer(str(tiny_assets["sft_model"]), "model_name_or_path")
    eos = tokenizer.eos_token_id
    assert scorer.tokenizer.pad_token_id != eos
    prompt, completion = "The film is", tokenizer(" great and", add_special_tokens=False)["input_ids"]
    seen = []
    hook = scorer.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]),
                                                  with_kwargs=True)
    reward = LearnedReward(scorer, tokenizer)
    with_eos, without_eos = reward([prompt] * 2, [" great and"] * 2, [completion + [eos], completion])
    hook.remove()
    assert with_eos != pytest.approx(without_eos, abs=1e-6)
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert seen[0][0].tolist() == prompt_ids + completion + [eos]  # scored at its last token: EOS
    assert seen[0][1].tolist() == prompt_ids + completion + [scorer.tokenizer.pad_token_id]
    with torch.no_grad():
        alone = scorer.model(input_ids=torch.tensor([prompt_ids + completion + [eos]])).logits[0, 0].item()
    assert with_eos == pytest.approx((alone - scorer.mean) / scorer.sd, abs=1e-5)


@pytest.fixture(scope="module")
def rl_sweep(tiny_assets, pairs_dir, reward_model, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("rl") / "sweep"
    run_command("rl.py", *rl_args(tiny_assets, pairs_dir, out, reward_model, "method=rloo,reward=classifier,beta=0.05",
                                  "method=rloo,reward=reward_model,beta=0.05"), cwd=out.parent)
    return out


def test_rloo_trains_with_the_true_and_the_learned_reward_and_eval_puts_both_on_the_frontier(rl_sweep, tiny_assets,
                                                                                            pairs_dir):
    import torch
    from safetensors.torch import load_file

    sft = load_file(tiny_assets["sft_model"] / "model.safetensors")
    for name, reward in (("method-rloo_reward-classifier_beta-0.05", "classifier"),
                         ("method-rloo_reward-reward_model_beta-0.05", "reward_model")):
        run_dir = rl_sweep / name
        info = json.loads((run_dir / "sweep_run.json").read_text())
        assert info["method"] == "rloo" and info["reward"] == reward and info["beta"] == 0.05
        assert json.loads((run_dir / "stage_complete.json").read_text())["summary"]["global_step"] == 4
        trained = load_file(run_dir / "model.safetensors")
        assert any(not torch.equal(trained[key], sft[key]) for key in sft)
    # the true reward trained on in sd units of the pairs' SFT samples, its scale recorded; the learned one has its own
    pairs = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    scale = classifier_reward_scale(pairs)
    summary = json.loads((rl_sweep / "method-rloo_reward-classifier_beta-0.05" / "stage_complete.json").read_text())
    assert summary["summary"]["reward_mean"] == pytest.approx(scale["mean"], rel=1e-9)
    assert summary["summary"]["reward_sd"] == pytest.approx(scale["sd"], rel=1e-9) and scale["samples"] > len(pairs) / 3
    out = rl_sweep.parent / "eval"
    run_command("eval.py", "--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", rl_sweep,
                "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
                "--num_prompts", 4, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                "--output_dir", out, "--report_to", "none", cwd=rl_sweep.parent)
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    rl_rows = [row for row in rows if row["method"] == "rloo"]
    assert {row["loss_type"] for row in rl_rows} == {"classifier", "reward_model"}
    assert len(rl_rows) == 4 and all(float(row["kl"]) > 0 for row in rl_rows)  # checkpoint-2 and final of each
    report = (out / "report.md").read_text()
    assert "RLOO (true reward) β=0.05" in report and "RLOO (reward model) β=0.05" in report


def test_a_killed_rl_run_resumes_to_the_same_weights(rl_sweep, tiny_assets, pairs_dir, reward_model, tmp_path,  # noqa: F811
                                                     monkeypatch, capfd):
    import torch
    from safetensors.torch import load_file

    from tests.conftest import interrupt_after_checkpoint

    args = [str(arg) for arg in rl_args(tiny_assets, pairs_dir, tmp_path / "sweep", reward_model,
                                          "method=rloo,reward=classifier,beta=0.05")]
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 2)
        with pytest.raises(SystemExit) as stopped:
            run_script(rl.main, rl.dataclass_types(), args)
    assert stopped.value.code == 130
    run_dir = tmp_path / "sweep" / "method-rloo_reward-classifier_beta-0.05"
    assert (run_dir / "checkpoint-2").is_dir() and not (run_dir / "model.safetensors").exists()
    capfd.readouterr()
    run_script(rl.main, rl.dataclass_types(), args)
    assert "Resuming from " + str(run_dir / "checkpoint-2") in capfd.readouterr().err
    resumed = load_file(run_dir / "model.safetensors")
    straight = load_file(rl_sweep / run_dir.name / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-5)


def test_rl_on_two_processes_trains_each_entry_once_with_one_wandb_run(tiny_assets, pairs_dir, reward_model,  # noqa: F811
                                                                        tmp_path):
    """Under torchrun with 2 CPU processes, as users who outgrow one GPU run it: both entries finish, each written
    once (one wandb run, one final save), at the optimizer batch of the one-process run."""

    out = tmp_path / "sweep"
    args = rl_args(tiny_assets, pairs_dir, out, reward_model, "method=rloo,reward=classifier,beta=0.05",
                   "method=grpo,reward=reward_model,beta=0.05")
    args[args.index("--per_device_train_batch_size") + 1] = 4  # 4 per process x 2 processes: 8 completions a step
    args[args.index("--report_to") + 1] = "wandb"
    result = launch("rl.py", *args, "--global_batch_size", 8, cwd=tmp_path)
    for name in ("method-rloo_reward-classifier_beta-0.05", "method-grpo_reward-reward_model_beta-0.05"):
        assert result.stderr.count(f"[{name}] saved to") == 1  # logged once, by the main process
        run_dir = out / name
        assert json.loads((run_dir / "stage_complete.json").read_text())["summary"]["global_step"] == 4
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
        assert (run_dir / "model.safetensors").is_file() and not (run_dir / ".final-model.tmp").exists()


def test_rl_trains_without_dropout_two_log_prob_passes_agree_and_the_run_records_it(tiny_assets, pairs_dir,  # noqa: F811
                                                                                    rl_sweep, tmp_path):
    """The SFT models have dropout 0.1 and the Trainer samples in train mode: with dropout on, two log-prob passes of
    the policy over the same batch would differ (and differ from the reference's, taken without dropout). Built as
    the stage builds it, the RLOO trainer's policy gives the same log-probs twice, bit for bit; a config that turns
    dropout on is refused; the recorded config of a finished RL run says dropout was off."""
    import torch
    from transformers import AutoConfig

    from dpo_pipeline.cli import parse_config
    from dpo_pipeline.errors import PipelineError
    from dpo_pipeline.models import load_tokenizer
    from dpo_pipeline.stages.rl import rl_trainer, training_prompts

    assert AutoConfig.from_pretrained(tiny_assets["sft_model"]).resid_pdrop > 0  # else this test could not fail
    args = [str(arg) for arg in rl_args(tiny_assets, pairs_dir, tmp_path / "sweep", tmp_path, "beta=0.05")]
    _, training_args, _ = parse_config(rl.dataclass_types(), [*args, "--beta", "0.05"])  # a reference model
    assert training_args.disable_dropout
    tokenizer = load_tokenizer(str(tiny_assets["sft_model"]), "model_name_or_path")
    prompts = training_prompts(str(pairs_dir / "pairs.jsonl"), tokenizer, 8)
    trainer = rl_trainer("rloo", training_args, str(tiny_assets["sft_model"]), lambda completions, **_: [0.0] *
                         len(completions), prompts, tokenizer)
    trainer.model.train()  # as the Trainer is while it samples and scores
    ids = torch.tensor([[5, 17, 33, 41, 8, 12, 19, 23]] * 4)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        first, second = (trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 4, 4)[0]
                         for _ in range(2))
        reference = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, 4, 4)[0]
    assert torch.equal(first, second)
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-6)  # the untrained policy is the reference

    with pytest.raises(PipelineError, match="disable_dropout"):
        parse_config(rl.dataclass_types(), [*args, "--disable_dropout", "false"])
    recorded = json.loads((rl_sweep / "method-rloo_reward-classifier_beta-0.05" / "run_config.json").read_text())
    assert recorded["configs"]["training"]["disable_dropout"] is True


def test_the_true_reward_is_standardised_on_the_distinct_sft_samples_worked_by_hand():
    """Pairs (prompt, chosen, rejected) with their recorded P(POSITIVE): (a, b, c) 0.9 / 0.5, (a, b, e) 0.9 / 0.1,
    (d, b, f) 0.7 / 0.5. Distinct (prompt, completion) samples, each once: ab 0.9, ac 0.5, ae 0.1, db 0.7, df 0.5 (b
    of prompt a is one sample, b of prompt d another). Mean 2.7 / 5 = 0.54; population sd
    sqrt((0.36^2 + 0.04^2 + 0.44^2 + 0.16^2 + 0.04^2) / 5) = sqrt(0.352 / 5) = 0.265330. A completion the classifier
    scores 0.9 gets the reward (0.9 - 0.54) / 0.265330 = 1.356801."""
    from dpo_pipeline.stages.rl import ClassifierReward

    pairs = [
        {"prompt": "a", "chosen": "b", "rejected": "c", "chosen_reward": 0.9, "rejected_reward": 0.5},
        {"prompt": "a", "chosen": "b", "rejected": "e", "chosen_reward": 0.9, "rejected_reward": 0.1},
        {"prompt": "d", "chosen": "b", "rejected": "f", "chosen_reward": 0.7, "rejected_reward": 0.5}]
    scale = classifier_reward_scale(pairs)
    assert scale["samples"] == 5
    assert scale["mean"] == pytest.approx(0.54) and scale["sd"] == pytest.approx(0.265330, abs=1e-6)

    class Scores:  # a classifier that gives every text the score its text names
        def score(self, texts):
            return [float(text.split()[-1]) for text in texts]

    reward = ClassifierReward(Scores(), scale["mean"], scale["sd"])
    assert reward(["p "], ["0.9"]) == pytest.approx([1.356801], abs=1e-6)
    with pytest.raises(PipelineError, match="cannot be standardised"):
        ClassifierReward(Scores(), 0.5, 0.0)


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_rl_log_probs_of_left_padded_rows_are_those_of_the_row_alone(method, tiny_assets, pairs_dir, tmp_path):
    """`generate` samples a left-padded prompt at positions counted from its first real token; the policy-gradient
    and KL log-probs must be taken at the same ones. Built as the stage builds it, the trainer's per-token log-probs
    (policy, as the loss calls it; reference, as scoring calls it, two rows at a time) of 3 rows with prompts of 2, 5
    and 7 tokens, left-padded to one width with the completion after, equal each row's forward alone, unpadded
    (positions 0..n-1), to 1e-5 (float32 on the CPU). TRL's own trainers count positions from the first column,
    padding included: there the first row's completion tokens were off by up to 0.14 nats."""
    import torch

    from dpo_pipeline.cli import parse_config
    from dpo_pipeline.generation import left_pad
    from dpo_pipeline.models import load_tokenizer
    from dpo_pipeline.stages.rl import rl_trainer, training_prompts

    args = [str(arg) for arg in rl_args(tiny_assets, pairs_dir, tmp_path / "sweep", tmp_path, "beta=0.05")]
    _, training_args, _ = parse_config(rl.dataclass_types(), [*args, "--beta", "0.05"])  # a reference model
    tokenizer = load_tokenizer(str(tiny_assets["sft_model"]), "model_name_or_path")
    prompts = training_prompts(str(pairs_dir / "pairs.jsonl"), tokenizer, 8)
    trainer = rl_trainer(method, training_args, str(tiny_assets["sft_model"]), lambda completions, **_: [0.0] *
                         len(completions), prompts, tokenizer)
    completion = [41, 42, 43, 44]
    rows = [[11, 12] + completion, [21, 22, 23, 24, 25] + completion, [31, 32, 33, 34, 35, 36, 37] + completion]
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        policy, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, len(completion),
                                                                  compute_entropy=True)
        reference, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, len(completion),
                                                                     batch_size=2)
        for model, padded in ((trainer.model, policy), (trainer.ref_model, reference)):
            for row, logps in zip(rows, padded):
                alone = torch.tensor([row])
                logits = model(input_ids=alone).logits[0, -len(completion) - 1 : -1]
                expected = logits.log_softmax(-1).gather(-1, alone[0, -len(completion) :, None])[:, 0]
                torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)


# Online DPO (Guo et al. 2024) as a method of rl.py: DPO's loss on a pair sampled from the policy at every step.
ONLINE_DPO_ENTRIES = ("method=online_dpo,reward=classifier,beta=0.1", "method=online_dpo,reward=reward_model,beta=0.1")


def online_dpo_args(assets, pairs, out, reward_model, *sweep):
    args = rl_args(assets, pairs, out, reward_model, *sweep)
    args[args.index("--num_generations") + 1] = 2  # a pair per prompt: any other number is refused for online DPO
    return args


def online_dpo_trainer(tiny_assets, pairs_dir, tmp_path, reward, *extra):
    """The online DPO trainer as the stage builds it, on 8 of the pairs' prompts."""
    from dpo_pipeline.cli import parse_config
    from dpo_pipeline.models import load_tokenizer
    from dpo_pipeline.stages.rl import rl_trainer, training_prompts

    args = [str(arg) for arg in online_dpo_args(tiny_assets, pairs_dir, tmp_path / "sweep", tmp_path, "beta=0.1")]
    _, training_args, _ = parse_config(rl.dataclass_types(), [*args, "--beta", "0.1", *map(str, extra)])
    tokenizer = load_tokenizer(str(tiny_assets["sft_model"]), "model_name_or_path")
    prompts = training_prompts(str(pairs_dir / "pairs.jsonl"), tokenizer, 8)
    return rl_trainer("online_dpo", training_args, str(tiny_assets["sft_model"]), reward, prompts, tokenizer)


@pytest.fixture(scope="module")
def online_dpo_sweep(tiny_assets, pairs_dir, reward_model, tmp_path_factory):  # noqa: F811
    """rl.py with both online DPO entries, 4 steps, the live evaluation on (eval.py's settings on the tiny assets)."""
    out = tmp_path_factory.mktemp("online_dpo") / "sweep"
    eval_config = out.parent / "eval.yaml"
    eval_config.write_text(f"sft_model_path: {tiny_assets['sft_model']}\nclassifier_name_or_path: "
                           f"{tiny_assets['classifier']}\ndataset_name: {tiny_assets['data']}\nnum_prompts: 4\n"
                           "samples_per_prompt: 2\nmax_new_tokens: 8\nclassifier_max_length: 64\n")
    run_command("rl.py", *online_dpo_args(tiny_assets, pairs_dir, out, reward_model, *ONLINE_DPO_ENTRIES),
                "--live_eval_config", eval_config, "--live_eval_prompts", 2, cwd=out.parent)
    return out


def test_online_dpo_trains_with_the_true_and_the_learned_reward_and_eval_puts_both_on_the_frontier(
        online_dpo_sweep, tiny_assets):
    """Both entries train 4 steps from the SFT model (the weights move), record their method, reward and beta as the
    RLOO runs do, keep the reward and KL of their samples in the summary, are measured live at step 0 and each save
    step (2, 4: RL runs have no evaluation steps), and eval.py puts their checkpoints on the frontier, labelled."""
    import torch
    from safetensors.torch import load_file

    sft = load_file(tiny_assets["sft_model"] / "model.safetensors")
    for entry, reward in zip(ONLINE_DPO_ENTRIES, ("classifier", "reward_model")):
        run_dir = online_dpo_sweep / f"method-online_dpo_reward-{reward}_beta-0.1"
        info = json.loads((run_dir / "sweep_run.json").read_text())
        assert info["method"] == "online_dpo" and info["reward"] == reward and info["beta"] == 0.1
        assert info["loss_type"] == [reward]
        summary = json.loads((run_dir / "stage_complete.json").read_text())["summary"]
        assert summary["global_step"] == 4 and {"reward", "kl"} <= summary.keys()
        assert ("reward_sd" in summary) == (reward == "classifier")  # the true reward in sd units of the SFT samples
        trained = load_file(run_dir / "model.safetensors")
        assert any(not torch.equal(trained[key], sft[key]) for key in sft)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        live = [record for record in records if "live/reward" in record]
        assert [record["step"] for record in live] == [0, 2, 4]
        assert abs(live[0]["live/kl"]) < 1e-5 and live[-1]["live/kl"] > 0
        assert any("rewards/margins" in record for record in records)  # DPO's implicit reward, logged by TRL
    out = online_dpo_sweep.parent / "eval"
    run_command("eval.py", "--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", online_dpo_sweep,
                "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
                "--num_prompts", 4, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                "--output_dir", out, "--report_to", "none", cwd=online_dpo_sweep.parent)
    rows = [row for row in csv.DictReader((out / "frontier.csv").open()) if row["method"] == "online_dpo"]
    assert {row["loss_type"] for row in rows} == {"classifier", "reward_model"}
    assert len(rows) == 4 and all(float(row["kl"]) > 0 for row in rows)  # checkpoint-2 and final of each
    report = (out / "report.md").read_text()
    assert "online DPO (true reward) β=0.1" in report and "online DPO (reward model) β=0.1" in report


def test_a_reward_model_trained_again_leaves_the_true_reward_runs_finished(online_dpo_sweep, tiny_assets, pairs_dir,
                                                                           reward_model, tmp_path):  # noqa: F811
    """The mixed sweep's command again after the reward model was trained again in its folder (its record changed):
    the true-reward run does not depend on it and stays finished; the reward-model run is no longer the run its
    folder holds, and is refused in one line (not silently kept)."""
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(online_dpo_sweep, sweep)
    shutil.rmtree(sweep / "method-online_dpo_reward-reward_model_beta-0.1")
    record_file = reward_model / "stage_complete.json"
    record = record_file.read_text()
    changed = json.loads(record)
    changed["summary"]["train_loss"] = 0.123  # another training of it
    try:
        record_file.write_text(json.dumps(changed))
        result = run_command("rl.py", *online_dpo_args(tiny_assets, pairs_dir, sweep, reward_model,
                                                       ONLINE_DPO_ENTRIES[0]),
                             "--live_eval_config", online_dpo_sweep.parent / "eval.yaml", "--live_eval_prompts", 2,
                             cwd=tmp_path, check=False)
    finally:
        record_file.write_text(record)  # the module's reward model, as the other tests read it
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[method-online_dpo_reward-classifier_beta-0.1] finished already; skipping" in result.stderr


def test_online_dpo_ranks_pairs_sampled_from_the_weights_of_the_step_that_trains_on_them(tiny_assets, pairs_dir,
                                                                                         tmp_path, monkeypatch):
    """Three steps, spied on: every `generate` call (which model's weights sampled, what it sampled), the reward
    function (what it scored) and the policy's weights at the start of each step. At step k the completions were
    sampled by a model whose weights are step k's, bit for bit (from step 2 on they differ from the SFT model's and
    from step k-1's: pairs from the reference or a stale policy would fail here), the reward function scored exactly
    those completions (each up to its first EOS, with the prompt ids they were sampled from), and the trainer's logged
    `logps/chosen` and `logps/rejected` at step k are the means over the pairs of the summed log-probs of the
    completions the reward ranked first and second, recomputed here under step k's weights on each row alone,
    unpadded."""
    import copy

    import torch
    from transformers import GenerationMixin, TrainerCallback

    events = []

    def reward(prompts, completions, completion_ids, prompt_ids=None, **kwargs):
        scores = [float(len(ids)) + (sum(ids) % 7) / 10 for ids in completion_ids]
        events.append(("scored", [list(p) for p in prompt_ids], [list(c) for c in completion_ids], scores))
        return scores

    original_generate = GenerationMixin.generate

    def generate(model, *args, **kwargs):
        weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        output = original_generate(model, *args, **kwargs)
        events.append(("generated", weights, kwargs["input_ids"].clone(), kwargs["attention_mask"].clone(),
                       output.clone()))
        return output

    class StepWeights(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            events.append(("step", state.global_step + 1,
                           {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}))

    trainer = online_dpo_trainer(tiny_assets, pairs_dir, tmp_path, reward, "--max_steps", 3, "--save_steps", 100)
    trainer.add_callback(StepWeights())
    sft = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    monkeypatch.setattr(GenerationMixin, "generate", generate)
    trainer.train()
    monkeypatch.undo()

    assert [event[0] for event in events] == ["step", "generated", "scored"] * 3
    logged = {entry["step"]: entry for entry in trainer.state.log_history if "logps/chosen" in entry}
    eos = trainer.eos_token_ids
    previous = sft
    for k in (1, 2, 3):
        (_, step, weights), (_, sampler, prompt_ids, prompt_mask, output), (_, scored_prompts, scored, scores) = \
            events[3 * (k - 1): 3 * k]
        assert step == k
        assert all(torch.equal(sampler[name], weights[name]) for name in weights)
        if k > 1:  # the policy has moved: the SFT model's or the last step's weights would not pass the check above
            assert any(not torch.equal(weights[name], sft[name]) for name in weights)
            assert any(not torch.equal(weights[name], previous[name]) for name in weights)
        previous = weights
        sampled = []
        for row in output[:, prompt_ids.size(1):].tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            sampled.append(row[:end])
        assert scored == sampled
        assert scored_prompts == [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]

        model = copy.deepcopy(trainer.model)
        model.load_state_dict(weights)
        summed = []
        with torch.no_grad():
            for prompt, completion in zip(scored_prompts, scored):
                ids = torch.tensor([prompt + completion])
                logps = model(input_ids=ids).logits[0, len(prompt) - 1: -1].log_softmax(-1)
                summed.append(logps.gather(-1, ids[0, len(prompt):, None]).sum().item())
        half = len(summed) // 2  # rows i and i + half: the two completions of prompt i
        first_wins = [scores[i] >= scores[i + half] for i in range(half)]
        chosen = [summed[i] if wins else summed[i + half] for i, wins in enumerate(first_wins)]
        rejected = [summed[i + half] if wins else summed[i] for i, wins in enumerate(first_wins)]
        assert logged[k]["logps/chosen"] == pytest.approx(sum(chosen) / half, abs=1e-4)
        assert logged[k]["logps/rejected"] == pytest.approx(sum(rejected) / half, abs=1e-4)


def test_online_dpo_log_probs_of_left_padded_rows_are_those_of_the_row_alone(tiny_assets, pairs_dir, tmp_path):
    """As for RLOO and GRPO (`test_rl_log_probs_of_left_padded_rows_are_those_of_the_row_alone`), through online
    DPO's own log-prob method (`_forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask)`): 3 rows
    with prompts of 2, 5 and 7 tokens, left-padded to one width as TRL pads them for `generate`, and a completion
    of 4 tokens (the last row's cut after 2 by the completion mask, as after an EOS); the policy's and the
    reference's per-token log-probs of the completion tokens equal each row's forward alone, unpadded, to 1e-5
    (float32 on the CPU). TRL's own `_forward` counts positions from the first column, padding included: there the
    first row's completion tokens were off by up to 0.14 nats."""
    import torch

    from dpo_pipeline.generation import left_pad
    from dpo_pipeline.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_assets["sft_model"]), "model_name_or_path")
    trainer = online_dpo_trainer(tiny_assets, pairs_dir, tmp_path, lambda completions, **_: [0.0] * len(completions))
    prompts = [[11, 12], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35, 36, 37]]
    completion_ids = torch.tensor([[41, 42, 43, 44]] * 3)
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    prompt_ids, prompt_mask = left_pad(prompts, tokenizer.pad_token_id)
    with torch.no_grad():
        for model in (trainer.model, trainer.ref_model):
            padded = trainer._forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
            for prompt, logps, mask in zip(prompts, padded, completion_mask):
                completion = completion_ids[0, : int(mask.sum())].tolist()
                alone = torch.tensor([prompt + completion])
                logits = model(input_ids=alone).logits[0, len(prompt) - 1: -1]
                expected = logits.log_softmax(-1).gather(-1, alone[0, len(prompt):, None])[:, 0]
                torch.testing.assert_close(logps[: len(completion)], expected, rtol=0, atol=1e-5)


def trainer_class_of_trl(trainer):
    from trl.experimental.online_dpo import OnlineDPOTrainer

    assert isinstance(trainer, OnlineDPOTrainer) and type(trainer) is not OnlineDPOTrainer
    return OnlineDPOTrainer


def test_online_dpo_log_probs_are_float32_under_bf16_autocast(tiny_assets, pairs_dir, tmp_path):
    """TRL's online DPO takes its log-probs from the model's logits, which bf16 autocast computes in bfloat16. The
    trainer's `_forward` under bf16 autocast gives the log-softmax of float32 logits: the output layer's input (the
    body's output, itself under autocast) times its weights, both cast up, computed here, to 1e-5, where TRL's own
    `_forward` is off by 0.02 nats on the tiny model; the gradient reaches the head's weights (GPT-2's tied input
    embeddings); afterwards the output layer is as it was (`output_layer_in_float32` is held for the call only)."""
    import torch

    trainer = online_dpo_trainer(tiny_assets, pairs_dir, tmp_path, lambda completions, **_: [0.0] * len(completions))
    model, head = trainer.model, trainer.model.get_output_embeddings()
    seen = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    prompt_ids, prompt_mask = torch.tensor([[5, 17, 33, 41]]), torch.ones(1, 4, dtype=torch.long)
    completion_ids, completion_mask = torch.tensor([[8, 12, 19, 23]]), torch.ones(1, 4, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logps = trainer._forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        with torch.no_grad():  # TRL's own
            trl_logps = trainer_class_of_trl(trainer)._forward(trainer, model, prompt_ids, prompt_mask, completion_ids,
                                                               completion_mask)
    hook.remove()
    logits = (seen[0].float() @ head.weight.detach().float().T)[0, 3:-1]
    expected = logits.log_softmax(-1).gather(-1, completion_ids[0, :, None])[:, 0]
    assert logps.dtype == torch.float32
    torch.testing.assert_close(logps[0].detach(), expected, rtol=0, atol=1e-5)
    assert (trl_logps[0] - expected).abs().max() > 1e-3  # 0.02 nats
    logps.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert "forward" not in vars(head)


def test_the_reward_models_new_weights_are_seeded_whatever_ran_before(tiny_pipeline, tmp_path, monkeypatch):
    """The reward model's one-output head and its pad token's embedding row are new weights: the same command gives
    the same ones, whatever drew from torch's generator earlier in the process (two clones of one commit trained
    two different reward models before they were seeded). The model the stage hands to TRL's RewardTrainer is
    recorded, and the stage stopped there."""
    import torch
    import trl

    import reward_model
    from dpo_pipeline.cli import parse_config
    from tests.conftest import tiny_workspace
    from tests.helpers import REPO

    class Stop(Exception):
        pass

    handed = []

    def record(*, model, **unused):
        handed.append({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        raise Stop

    monkeypatch.setattr(trl, "RewardTrainer", record)
    for draws in (1, 1000):
        workspace = tiny_workspace(tiny_pipeline, "reward_model", tmp_path / f"ws-{draws}")
        monkeypatch.chdir(workspace)
        torch.randn(draws)  # what ran before in the process
        with pytest.raises(Stop):
            reward_model.main(*parse_config(reward_model.dataclass_types(), [
                "--config", str(REPO / "configs/tiny/reward_model.yaml"), "--report_to", "none", *TRAINING_ON_CPU]))
    first, second = handed
    assert first.keys() == second.keys() and "score.weight" in first
    for name in first:
        assert torch.equal(first[name], second[name]), name
