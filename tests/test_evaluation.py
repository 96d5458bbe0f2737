"""The evaluation on tiny models: baselines on the frontier (Preferred-FT, IPO, best-of-N), held-out
implicit-reward accuracy, win rates, the LLM-judge mode, the label-noise study, the report, and eval.py's numbers
recomputed independently from its saved samples."""

import csv
import json

import pytest
import torch

import dpo
import eval as eval_script
import preference_pairs
import sft
from dpo_pipeline.cli import run_script
from tests.conftest import TRAINING_ON_CPU as _CPU

TRAINING_ON_CPU = [*_CPU, "--report_to", "none"]
NUM_TRAIN_PROMPTS, NUM_HELDOUT_PROMPTS = 12, 4


def run(script, *args):
    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def study(tiny_assets, tmp_path_factory):
    """Pairs with a held-out slice and a noisy copy; a sweep with DPO (two seeds), IPO and a label-noise run; Preferred-FT in
    the sweep folder; and eval.py over all of it with best-of-N and the tiny SFT model as a (bad) judge."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    a, root = tiny_assets, tmp_path_factory.mktemp("study")
    judge_dir = root / "judge-model"  # a random tiny GPT-2 with room for the judge prompt: a hopeless judge
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a["policy_init"], n_positions=512)).save_pretrained(
        judge_dir)
    AutoTokenizer.from_pretrained(a["policy_init"]).save_pretrained(judge_dir)
    pairs_dir, sweep_dir, eval_dir = root / "pairs", root / "dpo", root / "eval"
    run(preference_pairs, "--model_name_or_path", a["sft_model"], "--classifier_name_or_path", a["classifier"],
        "--dataset_name", a["data"], "--num_prompts", NUM_TRAIN_PROMPTS, "--heldout_prompts", NUM_HELDOUT_PROMPTS,
        "--label_noise", 0.25, "--max_new_tokens", 8, "--generation_batch_size", 8, "--classifier_max_length", 64,
        "--output_dir", pairs_dir, "--report_to", "none", "--seed", 5)
    run(dpo, "--model_name_or_path", a["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep_dir, "--sweep", "beta=0.1", "beta=0.1,seed=1", "beta=0.1,loss_type=ipo",
        "beta=0.1,label_noise=0.25",
        "--max_steps", 4, "--save_steps", 2, "--per_device_train_batch_size", 8, "--learning_rate", 1e-3,
        "--max_length", 32, "--logging_steps", 1, *TRAINING_ON_CPU)
    run(sft, "--model_name_or_path", a["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep_dir / "preferred-ft", "--max_steps", 4, "--save_steps", 2,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, *TRAINING_ON_CPU)
    eval_args = ["--sft_model_path", a["sft_model"], "--dpo_output_dir", sweep_dir,
                 "--classifier_name_or_path", a["classifier"], "--dataset_name", a["data"], "--num_prompts", 6,
                 "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                 "--heldout_pairs_file", pairs_dir / "heldout_pairs.jsonl", "--best_of_n", 1, 2, 4,
                 "--judge_model_path", judge_dir, "--judge_max_new_tokens", 4, "--report_prompts", 2,
                 "--output_dir", eval_dir, "--report_to", "none"]
    run(eval_script, *eval_args)
    with (eval_dir / "frontier.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    return {"pairs": pairs_dir, "sweep": sweep_dir, "eval": eval_dir, "rows": rows, "eval_args": eval_args}


def test_held_out_pairs_come_from_prompts_no_model_trains_on(study):
    records = read_jsonl(study["pairs"] / "completions.jsonl")
    assert len(records) == NUM_TRAIN_PROMPTS + NUM_HELDOUT_PROMPTS
    train_prompts = {p["prompt_index"] for p in read_jsonl(study["pairs"] / "pairs.jsonl")}
    heldout = read_jsonl(study["pairs"] / "heldout_pairs.jsonl")
    assert heldout and {p["prompt_index"] for p in heldout} <= set(range(NUM_TRAIN_PROMPTS, len(records)))
    assert not train_prompts & {p["prompt_index"] for p in heldout}
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in heldout)  # never flipped
    summary = json.loads((study["pairs"] / "stage_complete.json").read_text())["summary"]
    assert summary["heldout_pairs"] == len(heldout) and summary["prompts"] == NUM_TRAIN_PROMPTS


def test_the_noisy_pairs_file_flips_a_quarter_and_the_noise_run_trains_on_it(study):
    clean = read_jsonl(study["pairs"] / "pairs.jsonl")
    noisy = read_jsonl(study["pairs"] / "pairs_noise-0.25.jsonl")
    flipped = [pair for pair in noisy if pair["label_flipped"]]
    assert len(noisy) == len(clean) and len(flipped) == round(0.25 * len(clean))
    assert all(pair["chosen_reward"] < pair["rejected_reward"] for pair in flipped)
    info = json.loads((study["sweep"] / "beta-0.1_label_noise-0.25" / "sweep_run.json").read_text())
    assert info["label_noise"] == 0.25 and info["pairs_file"].endswith("pairs_noise-0.25.jsonl")
    assert json.loads((study["sweep"] / "beta-0.1" / "sweep_run.json").read_text())["label_noise"] == 0.0


def test_preferred_ft_trains_on_chosen_completions_only(study):
    run_dir = study["sweep"] / "preferred-ft"
    info = json.loads((run_dir / "sweep_run.json").read_text())
    assert info["method"] == "preferred_ft" and info["beta"] is None
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "checkpoint-2").is_dir()
    from dpo_pipeline.preference_data import load_preferences
    from dpo_pipeline.stages.sft import preferred_completions

    data = preferred_completions(load_preferences(str(study["pairs"] / "pairs.jsonl")))
    pairs = read_jsonl(study["pairs"] / "pairs.jsonl")
    # The sampled ids of each distinct (prompt, chosen), the loss on the chosen ids only (EOS only where sampled)
    examples = [(tuple(ids[: mask.index(1)]), tuple(ids[mask.index(1):]))
                for ids, mask in zip(data["input_ids"], data["completion_mask"])]
    assert all(mask == sorted(mask) for mask in data["completion_mask"])  # prompt zeros, then completion ones
    assert set(examples) == {(tuple(p["prompt_ids"]), tuple(p["chosen_ids"])) for p in pairs}
    assert len(examples) == len(set(examples))  # each chosen completion once


def test_the_frontier_has_every_series_with_held_out_accuracy_and_win_rates(study):
    rows = study["rows"]
    assert list(rows)[:1] == ["sft"]
    for run_name, method, loss in (("beta-0.1", "dpo", "sigmoid"), ("beta-0.1_loss_type-ipo", "dpo", "ipo"),
                                   ("preferred-ft", "preferred_ft", "preferred_ft"),
                                   ("beta-0.1_label_noise-0.25", "dpo", "sigmoid")):
        steps = {name: row for name, row in rows.items() if row["run"] == run_name}
        assert set(steps) == {f"{run_name}/step-2", f"{run_name}/step-4"}
        final = steps[f"{run_name}/step-4"]
        assert final["method"] == method and final["loss_type"] == loss and final["is_final"] == "True"
        correct = float(final["heldout_accuracy"]) * int(final["heldout_pairs"])  # a count of pairs
        assert int(final["heldout_pairs"]) > 0 and correct == pytest.approx(round(correct), abs=1e-9)
        assert int(final["wins"]) + int(final["losses"]) + int(final["ties"]) == 12
        assert float(final["win_rate"]) == pytest.approx(
            (int(final["wins"]) + int(final["ties"]) / 2) / 12)
    assert rows["preferred-ft/step-4"]["heldout_reward_margin"] == ""  # no beta, no reward margin
    assert rows["sft"]["heldout_accuracy"] == ""
    # the SFT model against its independently drawn samples: other samples (not all ties, as its own samples would be)
    assert int(rows["sft"]["wins"]) + int(rows["sft"]["losses"]) + int(rows["sft"]["ties"]) == 12
    assert int(rows["sft"]["ties"]) < 12
    best = [rows[f"best-of-{n}"] for n in (1, 2, 4)]
    assert [float(r["kl"]) for r in best] == pytest.approx([0.0, 0.1931472, 0.6362944])  # log N - (N-1)/N
    assert float(best[0]["reward"]) <= float(best[1]["reward"]) <= float(best[2]["reward"])
    assert all(r["num_samples"] == "24" for r in best)  # 6 prompts x 4 samples


def test_every_rate_has_a_bootstrap_standard_error_and_the_ranking_marks_what_is_within_noise(study):
    """Held-out accuracy, margins and win rates carry their `_se` (a bootstrap over prompts, from the per-pair margins
    kept in heldout/); the standard error of the accuracy recomputed from those margins is the one in the csv; the
    ranking gives each model's paired difference to the next with its 95% interval."""
    from dpo_pipeline.estimators import cluster_bootstrap

    row = study["rows"]["beta-0.1/step-4"]
    for key in ("heldout_accuracy_se", "heldout_logratio_margin_se", "heldout_reward_margin_se", "win_rate_se"):
        assert float(row[key]) > 0, key
    pairs = read_jsonl(study["eval"] / "heldout" / "beta-0.1__step-4.jsonl")
    assert len(pairs) == int(row["heldout_pairs"])
    assert len({p["prompt"] for p in pairs}) < len(pairs)  # several pairs per prompt: they are clustered
    recomputed = cluster_bootstrap([float(p["logratio_margin"] > 0) for p in pairs], [p["prompt"] for p in pairs])
    assert float(row["heldout_accuracy_se"]) == pytest.approx(recomputed["se"])
    assert float(row["heldout_accuracy"]) == pytest.approx(recomputed["mean"])
    report = (study["eval"] / "report.md").read_text()
    ranking = report.split("## Ranked by held-out implicit-reward accuracy")[1].split("##")[0]
    assert "accuracy minus the next's [95% interval]" in ranking and " ± " in ranking
    assert "≈ within noise" in ranking  # 6 held-out prompts cannot separate models trained for 4 steps
    assert "± " in report.split("## Final models")[1].split("##")[0]


def test_settings_trained_with_several_seeds_get_their_mean_and_spread(study):
    """beta-0.1 (the config's seed) and beta-0.1_seed-1 differ only by seed: one setting of two seeds in
    frontier_seeds.csv, with the mean and sd over seeds of reward and KL worked from their two rows; the report's
    table names both runs; runs of one seed are not grouped."""
    from dpo_pipeline.estimators import spread_over_seeds

    with (study["eval"] / "frontier_seeds.csv").open() as handle:
        groups = list(csv.DictReader(handle))
    assert len(groups) == 1
    group = groups[0]
    assert group["runs"] == "beta-0.1 beta-0.1_seed-1" and group["num_seeds"] == "2" and group["seeds"] == "default 1"
    rows = [study["rows"][name] for name in ("beta-0.1/step-4", "beta-0.1_seed-1/step-4")]
    assert rows[0]["setting"] == rows[1]["setting"] != study["rows"]["beta-0.1_loss_type-ipo/step-4"]["setting"]
    assert rows[1]["seed"] == "1" and rows[0]["seed"] == ""
    for figure in ("reward", "kl"):
        spread = spread_over_seeds([float(r[figure]) for r in rows])
        assert float(group[f"{figure}_mean"]) == pytest.approx(spread["mean"])
        assert float(group[f"{figure}_sd"]) == pytest.approx(spread["sd"]) and float(group[f"{figure}_sd"]) > 0
        assert float(group[f"{figure}_se"]) == pytest.approx(spread["sd"] / 2 ** 0.5)
    report = (study["eval"] / "report.md").read_text()
    seeds = report.split("## Across training seeds")[1].split("##")[0]
    assert "DPO β=0.1" in seeds and "`beta-0.1_seed-1`" in seeds and "default 1 (2)" in seeds


def test_the_judge_mode_reports_its_unparsable_share(study):
    """A tiny random GPT-2 is a hopeless judge: what it says is parsed or counted as unparsable, never guessed."""
    row = study["rows"]["beta-0.1/step-4"]
    wins, losses, ties, unparsable = (int(row[k]) for k in ("judge_wins", "judge_losses", "judge_ties",
                                                             "judge_unparsable"))
    assert wins + losses + ties + unparsable == 6  # sample 0 of each of the 6 prompts
    assert float(row["judge_unparsable_share"]) == pytest.approx(unparsable / 6)
    records = read_jsonl(study["eval"] / "judge" / "beta-0.1__step-4.jsonl")
    assert len(records) == 6 and all({"judge_output", "verdict"} <= r["model_as_A"].keys() & r["model_as_B"].keys()
                                     for r in records)  # both orders of every comparison kept
    unparsable_records = sum(r["winner"] is None for r in records)
    assert unparsable == unparsable_records
    if unparsable < 6:
        agree = sum(bool(r["agree"]) for r in records)
        assert float(row["judge_consistency"]) == pytest.approx(agree / (6 - unparsable))
        assert row["judge_consistency_se"] != "" and row["judge_win_rate_se"] != ""
    assert study["rows"]["beta-0.1/step-2"]["judge_wins"] == ""  # only final models are judged


def test_the_report_shows_every_section(study):
    report = (study["eval"] / "report.md").read_text()
    for heading in ("## Reward vs KL frontier", "## Final models", "## Ranked by held-out implicit-reward accuracy",
                    "## Best-of-N from the SFT model", "## Label noise", "## Training curves",
                    "## Sample generations"):
        assert heading in report
    for label in ("DPO β=0.1", "IPO τ=0.1", "Preferred-FT", "SFT", "25% flipped"):
        assert label in report
    assert "log N − (N−1)/N" in report and "unparsable" in report
    for image in ("frontier.png", "training_curves.png", "label_noise.png"):
        assert (study["eval"] / image).stat().st_size > 5_000


def test_eval_numbers_agree_with_an_independent_recomputation_from_the_saved_samples(study, tiny_assets):
    """Sequence KL with torch.distributions on unpadded sequences, rewards with the raw classifier, held-out
    log-probabilities of the pairs' sampled ids one pair at a time: the same numbers eval.py saved."""
    from torch.distributions import Categorical, kl_divergence
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["sft_model"])
    reference = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"]).eval()
    policy = AutoModelForCausalLM.from_pretrained(study["sweep"] / "beta-0.1").eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_assets["classifier"]).eval()
    classifier_tokenizer = AutoTokenizer.from_pretrained(tiny_assets["classifier"])
    positive = [i for i, label in classifier.config.id2label.items() if label == "POSITIVE"][0]

    samples = read_jsonl(study["eval"] / "samples" / "beta-0.1__step-4.jsonl")
    kls, rewards = [], []
    with torch.no_grad():
        for sample in samples:
            prompt_ids = sample["prompt_token_ids"]
            assert tokenizer.decode(prompt_ids) == sample["prompt"]
            ids = torch.tensor([prompt_ids + sample["completion_token_ids"]])
            start, end = len(prompt_ids) - 1, ids.shape[1] - 1  # positions that predict completion tokens
            p = Categorical(logits=policy(ids).logits[0, start:end])
            q = Categorical(logits=reference(ids).logits[0, start:end])
            kls.append(kl_divergence(p, q).sum().item())
            inputs = classifier_tokenizer(sample["prompt"] + sample["completion"], truncation=True, max_length=64,
                                          return_tensors="pt")
            rewards.append(torch.softmax(classifier(**inputs).logits[0], -1)[positive].item())
    assert kls == pytest.approx([s["kl"] for s in samples], abs=1e-4)
    assert rewards == pytest.approx([s["reward"] for s in samples], abs=1e-5)
    row = study["rows"]["beta-0.1/step-4"]
    assert float(row["kl"]) == pytest.approx(sum(kls) / len(kls), abs=1e-4)
    assert float(row["reward"]) == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)

    def logp(model, prompt_ids, completion_ids):
        ids = prompt_ids + completion_ids  # as sampled: EOS only where the completion has it
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        return sum(logprobs[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))

    margins = []
    for pair in read_jsonl(study["pairs"] / "heldout_pairs.jsonl"):
        chosen, rejected = (logp(policy, pair["prompt_ids"], pair[key]) - logp(reference, pair["prompt_ids"], pair[key])
                            for key in ("chosen_ids", "rejected_ids"))
        margins.append(chosen - rejected)
    assert float(row["heldout_accuracy"]) == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    assert float(row["heldout_logratio_margin"]) == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    assert float(row["heldout_reward_margin"]) == pytest.approx(0.1 * sum(margins) / len(margins), abs=1e-5)


def test_evaluation_is_incremental(study, tiny_assets):
    """A second run with the same settings evaluates nothing; a new run in the sweep is the only one evaluated."""
    results = sorted((study["eval"] / "models").glob("*.json"))
    before = {path.name: path.stat().st_mtime_ns for path in results}
    judged = (study["eval"] / "judge" / "beta-0.1__step-4.json").stat().st_mtime_ns
    run(eval_script, *study["eval_args"])
    assert {path.name: path.stat().st_mtime_ns for path in results} == before
    assert (study["eval"] / "judge" / "beta-0.1__step-4.json").stat().st_mtime_ns == judged

    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", study["pairs"] / "pairs.jsonl",
        "--output_dir", study["sweep"], "--sweep", "beta=1.0", "--max_steps", 2, "--save_steps", 2,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, *TRAINING_ON_CPU)
    run(eval_script, *study["eval_args"])
    after = {path.name: path.stat().st_mtime_ns for path in (study["eval"] / "models").glob("*.json")}
    assert {name for name in after if name not in before} == {"beta-1.0__step-2.json"}
    assert all(after[name] == mtime for name, mtime in before.items())


def test_without_checkpoints_only_new_final_models_are_measured_and_earlier_checkpoints_stay(study, tiny_assets,
                                                                                           tmp_path):
    """include_checkpoints false (make methods' evaluation): a new run's checkpoint is not measured, its final model
    is; the checkpoints measured before stay in frontier.csv."""
    import shutil

    sweep, eval_dir = tmp_path / "dpo", tmp_path / "eval"
    shutil.copytree(study["sweep"], sweep)
    shutil.copytree(study["eval"], eval_dir)
    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", study["pairs"] / "pairs.jsonl",
        "--output_dir", sweep, "--sweep", "beta=0.5", "--max_steps", 4, "--save_steps", 2,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, *TRAINING_ON_CPU)
    assert (sweep / "beta-0.5" / "checkpoint-2").is_dir()
    args = [str(arg) for arg in study["eval_args"]]
    args[args.index("--dpo_output_dir") + 1] = str(sweep)
    args[args.index("--output_dir") + 1] = str(eval_dir)
    before = {path.name for path in (eval_dir / "models").glob("*.json")}
    run(eval_script, *args, "--include_checkpoints", "false")
    after = {path.name for path in (eval_dir / "models").glob("*.json")}
    assert after - before == {"beta-0.5__step-4.json"}
    with (eval_dir / "frontier.csv").open() as handle:
        names = {row["name"] for row in csv.DictReader(handle)}
    assert {"beta-0.1/step-2", "beta-0.1/step-4", "beta-0.5/step-4"} <= names
    assert "beta-0.5/step-2" not in names


def test_a_new_held_out_file_is_measured_without_sampling_again(study, tmp_path):
    """Only the held-out metrics of each model are measured again when only the held-out pairs changed: the samples
    (and so reward, KL and win rates) are kept."""
    import shutil

    eval_dir = tmp_path / "eval"
    shutil.copytree(study["eval"], eval_dir)
    fewer = tmp_path / "heldout_pairs.jsonl"
    first_three = (study["pairs"] / "heldout_pairs.jsonl").read_text().splitlines()[:3]
    fewer.write_text("".join(line + "\n" for line in first_three))
    args = [str(arg) for arg in study["eval_args"]]
    args[args.index("--heldout_pairs_file") + 1] = str(fewer)
    args[args.index("--output_dir") + 1] = str(eval_dir)
    samples = {path.name: path.stat().st_mtime_ns for path in (eval_dir / "samples").glob("*.jsonl")}
    run(eval_script, *args)
    assert {path.name: path.stat().st_mtime_ns for path in (eval_dir / "samples").glob("*.jsonl")} == samples
    with (eval_dir / "frontier.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    for name, row in rows.items():
        if row["heldout_pairs"] and name in study["rows"]:
            assert row["heldout_pairs"] == "3" and row["reward"] == study["rows"][name]["reward"]


def test_a_model_whose_weights_changed_is_evaluated_again(study, tmp_path):
    """The per-model cache is keyed by the weights: a checkpoint retrained in place is sampled and measured again,
    every other model comes from the cache."""
    import shutil

    sweep, eval_dir = tmp_path / "dpo", tmp_path / "eval"
    shutil.copytree(study["sweep"], sweep)
    shutil.copytree(study["eval"], eval_dir)
    args = [str(arg) for arg in study["eval_args"]]
    args[args.index("--dpo_output_dir") + 1] = str(sweep)
    args[args.index("--output_dir") + 1] = str(eval_dir)
    run(eval_script, *args)  # every model from the cache: the copies keep their file sizes and times
    before = {path.name: path.stat().st_mtime_ns for path in (eval_dir / "samples").glob("*.jsonl")}
    weights = sweep / "beta-0.1" / "checkpoint-2" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, weights, metadata={"format": "pt"})
    run(eval_script, *args)
    after = {path.name: path.stat().st_mtime_ns for path in (eval_dir / "samples").glob("*.jsonl")}
    assert [name for name in after if after[name] != before[name]] == ["beta-0.1__step-2.jsonl"]


def test_the_frontier_says_where_online_rl_stops_short_of_dpos_kl_range():
    """Each RL series is judged on its own against DPO's largest KL (17.3; label-noise runs left out): RLOO with the
    reward model reaches 4.1 at most, under 80% of it, and the note says so with what it was trained with (KL
    coefficients down to 0.002, 48 steps); RLOO with the true reward reaches 14.0 of 17.3 and needs no note."""
    from dpo_pipeline.report import kl_reach_note

    def rl(reward, beta, step, kl):
        return {"method": "rloo", "loss_type": reward, "beta": beta, "step": step, "kl": kl}

    rows = [rl("reward_model", 0.01, 48, 3.8), rl("reward_model", 0.002, 24, 4.1), rl("reward_model", 0.002, 48, 2.9),
            rl("classifier", 0.002, 48, 14.0), {"method": "dpo", "kl": 17.3},
            {"method": "dpo", "kl": 40.0, "label_noise": 0.2}]
    assert kl_reach_note(rows) == ("RLOO (reward model) reaches KL 4.1 nats at most (KL coefficients down to 0.002, "
                                   "up to 48 steps), DPO 17.3: above KL 4.1 there is no point of it to compare with")
    assert kl_reach_note([rl("classifier", 0.01, 48, 14.0), {"method": "dpo", "kl": 17.3}]) == ""
    assert kl_reach_note([{"method": "dpo", "kl": 17.3}]) == ""


def test_the_win_rate_is_against_independent_sft_samples_as_brute_force_finds(tiny_assets, tmp_path):
    """A model a little changed from SFT (its output rows of the positive words' tokens moved along the mean final
    hidden state: it says them a little more often; KL ~2 nats) against SFT. Its true win rate, worked out by brute
    force: 64 samples of each model per prompt, drawn on random streams of their own, every one of the 64 x 64 pairs
    of a prompt compared (wins + ties / 2), averaged over the prompts. eval.py's win rate (8 samples per prompt, each
    against one independent SFT sample) must agree within 3 of its standard errors plus the brute force's own error
    (~0.02). Its compared pairs must be no more often identical than independent draws are: compared with the SFT
    sample that shared its random numbers, a policy sample was identical to it in about 40% of the pairs here
    (independent draws: under 2%), and that coupled win rate was 0.69 against a true 0.63."""
    import dataclasses
    from collections import defaultdict

    from dpo_pipeline.cli import parse_config
    from dpo_pipeline.measure import SFT_COMPARISON_RUN, Evaluator, evaluate_policy
    from dpo_pipeline.samples import EvalStore
    from dpo_pipeline.tasks import get_task
    from tests.conftest import POSITIVE_WORDS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = tiny_assets
    tokenizer = AutoTokenizer.from_pretrained(a["sft_model"])
    model = AutoModelForCausalLM.from_pretrained(a["sft_model"])
    positive = sorted({i for word in POSITIVE_WORDS for i in tokenizer(" " + word, add_special_tokens=False)["input_ids"]})
    with torch.no_grad():
        hidden = model.transformer(**tokenizer(["The film is great and the cast"], return_tensors="pt"))
        direction = hidden.last_hidden_state.mean(dim=(0, 1))
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
        model.lm_head.weight[positive] += 3.0 * direction / direction.norm() ** 2  # their logits up by ~3
    run_dir = tmp_path / "dpo" / "nudged"
    model.save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)
    (run_dir / "sweep_run.json").write_text(json.dumps({"name": "nudged", "method": "dpo", "beta": 0.1,
                                                        "loss_type": ["sigmoid"], "label_noise": 0.0}))
    (run_dir / "stage_complete.json").write_text(json.dumps({"summary": {"global_step": 1}}))
    args = ["--sft_model_path", a["sft_model"], "--dpo_output_dir", tmp_path / "dpo", "--classifier_name_or_path",
            a["classifier"], "--dataset_name", a["data"], "--num_prompts", 32, "--samples_per_prompt", 8,
            "--max_new_tokens", 8, "--classifier_max_length", 64, "--best_of_n", 1, "--best_of_n_prompts", 1,
            "--generation_batch_size", 256, "--classifier_batch_size", 256, "--output_dir", tmp_path / "eval",
            "--report_to", "none"]
    run(eval_script, *args)
    with (tmp_path / "eval" / "frontier.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    nudged, sft_row = rows["nudged/step-1"], rows["sft"]

    (eval_args,) = parse_config(eval_script.dataclass_types(), [str(arg) for arg in args])
    task = get_task(eval_args.task)
    evaluator = Evaluator(eval_args, task, torch.device("cpu"))
    prompts = task.evaluation_prompts(eval_args, evaluator.tokenizer)
    many = dataclasses.replace(eval_args, samples_per_prompt=64)
    rewards, completions = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    for name, policy, seed in (("nudged", evaluator.load(str(run_dir), "nudged"), 1000),
                               ("sft", evaluator.reference, 2000)):
        _, samples = evaluate_policy(policy, evaluator.reference, evaluator.tokenizer, evaluator.reward, prompts,
                                     dataclasses.replace(many, seed=seed), is_reference=True)
        for sample in samples:
            rewards[name][sample["prompt_index"]].append(sample["reward"])
            completions[name][sample["prompt_index"]].append(tuple(sample["completion_token_ids"]))
    per_prompt, identical = [], []
    for prompt in rewards["nudged"]:
        mine, theirs = torch.tensor(rewards["nudged"][prompt])[:, None], torch.tensor(rewards["sft"][prompt])[None]
        per_prompt.append(((mine > theirs).double() + 0.5 * (mine == theirs).double()).mean().item())
        identical.append(sum(x == y for x in completions["nudged"][prompt] for y in completions["sft"][prompt])
                         / 64 ** 2)
    true_win_rate, true_identical = sum(per_prompt) / len(per_prompt), sum(identical) / len(identical)

    assert float(nudged["win_rate"]) == pytest.approx(true_win_rate, abs=3 * float(nudged["win_rate_se"]) + 0.02)
    assert float(sft_row["win_rate"]) == pytest.approx(0.5, abs=3 * float(sft_row["win_rate_se"]))
    store = EvalStore(tmp_path / "eval")
    mine, theirs = store.read_samples("nudged/step-1"), store.read_samples(SFT_COMPARISON_RUN)
    same = sum(mine[key]["completion_token_ids"] == theirs[key]["completion_token_ids"] for key in mine) / len(mine)
    assert same <= 2 * true_identical + 0.02, (same, true_identical)


def test_a_frontier_of_many_methods_has_one_panel_per_family_each_with_the_dpo_curve(tmp_path, monkeypatch):
    """The leaderboard's frontier (11 series): one panel per method family on shared axes, DPO's seed means drawn
    as a grey line in every panel but DPO's own, every series in its family's panel; a few series: one panel."""
    from dpo_pipeline import report

    settings = [("dpo", {"beta": b}) for b in (0.05, 0.5)] + [
        ("dpo", {"beta": b, "loss_type": loss}) for loss in ("ipo", "hinge", "nca_pair", "apo_zero") for b in (.1, 1)]
    settings += [("kto", {"beta": b}) for b in (0.05, 0.5)] + [("orpo", {"beta": b}) for b in (0.1, 1.0)]
    settings += [("simpo", {"beta": b, "gamma": 0.5}) for b in (0.5, 1.0)]
    settings += [("online_dpo", {"beta": b, "loss_type": reward}) for reward in ("classifier", "reward_model")
                 for b in (0.05, 0.5)]
    rows = [{"run": "sft", "method": "sft", "is_final": True, "step": 0, "kl": 0.0, "reward": 0.55}]
    for index, (method, setting) in enumerate(settings):
        for seed in (0, 1):
            rows.append({"run": f"{method}-{index}-{seed}", "method": method, "is_final": True, "step": 72,
                         "setting": f"{method}-{index}", "seed": seed, "kl": 2.0 + index / 3 + seed / 10,
                         "reward": 0.6 + index / 100, "label_noise": 0.0, **setting})
    figures = []
    monkeypatch.setattr(report, "_save", lambda figure, path: figures.append(figure))
    report.plot_frontier(rows, tmp_path / "frontier.png", "many methods")
    panels = [axes for axes in figures[0].axes if axes.axison]
    assert [axes.get_title() for axes in panels] == ["reference", "reference-free", "online RL"]
    labels = [[line.get_label() for line in axes.get_lines()] for axes in panels]
    assert "DPO (seed means)" not in labels[0] and all("DPO (seed means)" in panel for panel in labels[1:])
    legends = [" ".join(text.get_text() for text in axes.get_legend().get_texts()) for axes in panels]
    assert "IPO" in legends[0] and "KTO" in legends[0] and "SimPO" in legends[1] and "ORPO" in legends[1]
    assert "online DPO (true reward)" in legends[2] and "online DPO (reward model)" in legends[2]
    few = [row for row in rows if row["method"] in ("sft", "dpo") and row.get("loss_type") is None]
    report.plot_frontier(few, tmp_path / "few.png", "DPO only")
    assert len([axes for axes in figures[1].axes if axes.axison]) == 1
