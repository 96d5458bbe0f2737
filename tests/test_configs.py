"""Every YAML config parses with the real parser of its script; unknown keys fail; the README names real files."""

import re
from pathlib import Path

import pytest
import yaml

from dpo_pipeline.cli import parse_config
from dpo_pipeline.errors import PipelineError
from tests.conftest import REPO

CONFIGS = sorted(path for path in (REPO / "configs").glob("*/*.yaml") if path.parent.name != "accelerate")
PROFILE_24GB = "_24gb"
GPU_PROFILE = re.compile(r"_(lora_24gb|full_8x80gb|24gb)$")


def script_types(config_path: Path):
    import importlib

    stage = GPU_PROFILE.sub("", config_path.stem)
    if stage == "assets":
        from dpo_pipeline.tasks.chat.config import ChatAssetsArguments
        from dpo_pipeline.tasks.sentiment.config import EmbeddedAssetsArguments

        return [ChatAssetsArguments if config_path.parent.name == "chat-tiny" else EmbeddedAssetsArguments]
    module = {"sft": "sft", "preferred_ft": "sft", "judge": "sft", "pairs": "preference_pairs", "dpo": "dpo",
              "dpo_study": "dpo", "dpo_losses": "dpo", "dpo_label_noise": "dpo", "methods": "dpo",
              "methods_online": "rl",
              "unlikelihood": "dpo", "eval": "eval", "reward_model": "reward_model", "rl": "rl"}[stage]
    return importlib.import_module(module).dataclass_types()


def test_there_are_configs_for_every_scale():
    scales = {path.parent.name for path in CONFIGS}
    assert {"tiny", "gpt2-large", "paper", "chat-tiny", "ultrafeedback"} <= scales
    assert {path.stem for path in CONFIGS if path.parent.name == "tiny"} == {
        "assets", "sft", "pairs", "dpo", "eval", "preferred_ft", "dpo_study", "dpo_losses", "dpo_label_noise",
        "reward_model", "rl", "unlikelihood", "judge", "methods", "methods_online"}


def test_the_study_extends_the_demo_sweep_with_the_same_training_settings():
    """make study reuses the demo's finished DPO runs, which it can only do if nothing but the sweep differs."""
    demo = yaml.safe_load((REPO / "configs/tiny/dpo.yaml").read_text())
    study = yaml.safe_load((REPO / "configs/tiny/dpo_study.yaml").read_text())
    assert {k: v for k, v in study.items() if k != "sweep"} == {k: v for k, v in demo.items() if k != "sweep"}
    assert study["sweep"][: len(demo["sweep"])] == demo["sweep"]
    losses = yaml.safe_load((REPO / "configs/tiny/dpo_losses.yaml").read_text())  # make losses, beside the demo
    assert {k: v for k, v in losses.items() if k != "sweep"} == {k: v for k, v in demo.items() if k != "sweep"}
    assert any("loss_type=ipo" in entry for entry in losses["sweep"])
    assert any("loss_type=robust" in entry and "label_smoothing" in entry for entry in losses["sweep"])
    for beta in demo["sweep"]:  # every beta of the demo with 3 training seeds, on the same pairs
        assert {f"{beta},seed={seed}" for seed in (1, 2)} <= set(study["sweep"])
    rl = yaml.safe_load((REPO / "configs/tiny/rl.yaml").read_text())
    settings = [entry for entry in rl["sweep"] if "seed=" not in entry]
    assert {f"{entry},seed={seed}" for entry in settings for seed in (1, 2)} == set(rl["sweep"]) - set(settings)
    methods = yaml.safe_load((REPO / "configs/tiny/methods.yaml").read_text())  # make methods: the leaderboard
    assert {k: v for k, v in methods.items() if k != "sweep"} == {k: v for k, v in demo.items() if k != "sweep"}
    for sweep in (methods["sweep"], yaml.safe_load((REPO / "configs/tiny/methods_online.yaml").read_text())["sweep"]):
        settings = [entry for entry in sweep if "seed=" not in entry]
        assert {f"{entry},seed={seed}" for entry in settings for seed in (1, 2)} == set(sweep) - set(settings)
    label_noise = yaml.safe_load((REPO / "configs/tiny/dpo_label_noise.yaml").read_text())
    assert {k: v for k, v in label_noise.items() if k != "sweep"} == {k: v for k, v in demo.items() if k != "sweep"}
    pairs = yaml.safe_load((REPO / "configs/tiny/pairs.yaml").read_text())
    noise_levels = {float(part.split("=")[1]) for entry in label_noise["sweep"] for part in entry.split(",")
                    if part.startswith("label_noise=")}
    assert noise_levels and noise_levels <= set(pairs["label_noise"])
    # make study's judge answers the template eval.py asks it, and learns from the pairs the demo trains on
    judge = yaml.safe_load((REPO / "configs/tiny/judge.yaml").read_text())
    evaluation = yaml.safe_load((REPO / "configs/tiny/eval.yaml").read_text())
    assert judge["judge_template"] == evaluation["judge_template"] and judge["pairs_file"] == demo["pairs_file"]
    preferred_ft = yaml.safe_load((REPO / "configs/tiny/preferred_ft.yaml").read_text())
    assert preferred_ft["output_dir"].startswith(demo["output_dir"] + "/")  # in the sweep folder eval.py reads
    assert preferred_ft["pairs_file"] == demo["pairs_file"]


@pytest.mark.parametrize("scale", ["tiny", "gpt2-large", "paper"])
def test_unlikelihood_trains_beside_dpo_with_its_training_settings_and_the_papers_weights(scale):
    """The unlikelihood baseline is compared with DPO at the same training: every setting of dpo.yaml but the sweep
    and the reference pass (it has no reference model), into the same sweep folder, with the DPO paper's alphas."""
    dpo = yaml.safe_load((REPO / "configs" / scale / "dpo.yaml").read_text())
    unlikelihood = yaml.safe_load((REPO / "configs" / scale / "unlikelihood.yaml").read_text())
    reference_pass = {"sweep", "precompute_ref_log_probs", "precompute_ref_batch_size"}
    assert {k: v for k, v in unlikelihood.items() if k not in reference_pass} == \
        {k: v for k, v in dpo.items() if k not in reference_pass}
    assert unlikelihood["sweep"] == [f"method=unlikelihood,alpha={alpha}" for alpha in ("0.05", "0.1", "0.5", "1")]


@pytest.mark.parametrize("scale", ["gpt2-large", "paper"])
def test_the_24gb_profiles_train_as_the_80gb_configs_do_in_smaller_micro_batches(scale):
    """A GPU profile changes speed and memory, never the training: the same keys and values but for the micro-batch,
    the accumulation (same optimizer batch) and activation checkpointing."""
    profiles = sorted((REPO / "configs" / scale).glob(f"*{PROFILE_24GB}.yaml"))
    expected = {"sft", "dpo", "preferred_ft"} if scale == "gpt2-large" else {"dpo", "preferred_ft"}
    assert {path.stem.removesuffix(PROFILE_24GB) for path in profiles} == expected
    speed_only = {"per_device_train_batch_size", "per_device_eval_batch_size", "activation_checkpointing"}
    for profile_path in profiles:
        profile = yaml.safe_load(profile_path.read_text())
        full = yaml.safe_load(profile_path.with_name(profile_path.name.replace(PROFILE_24GB, "")).read_text())
        assert profile.keys() == full.keys()
        assert {key for key in full if full[key] != profile[key]} <= speed_only
        assert profile["per_device_train_batch_size"] < full["per_device_train_batch_size"]
        assert profile["global_batch_size"] == full["global_batch_size"]  # the same optimizer batch
        assert profile["global_batch_size"] % profile["per_device_train_batch_size"] == 0


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_config_parses(config_path):
    """Every key of the file reaches the parsed configs with its value (bf16 aside: it follows the machine)."""
    from enum import Enum

    configs = parse_config(script_types(config_path), ["--config", str(config_path)])
    for key, expected in yaml.safe_load(config_path.read_text()).items():
        holders = [config for config in configs if hasattr(config, key)]
        assert holders, key
        actual = getattr(holders[0], key)
        actual = actual.value if isinstance(actual, Enum) else actual
        if key == "bf16" or (key == "report_to" and actual == [expected]):
            continue
        assert actual == expected, (key, actual, expected)
    text = config_path.read_text()
    assert f"--config configs/{config_path.parent.name}/{config_path.name}" in text  # its command in the header


def test_full_scale_configs_name_the_hub_sources():
    import dpo
    import eval as eval_script
    import preference_pairs
    import rl
    import sft

    for scale in ("gpt2-large", "paper"):
        folder = REPO / "configs" / scale
        pairs_args = parse_config(preference_pairs.dataclass_types(), ["--config", str(folder / "pairs.yaml")])[0]
        assert pairs_args.classifier_name_or_path == "siebert/sentiment-roberta-large-english"
        assert pairs_args.dataset_name == "stanfordnlp/imdb" and pairs_args.dataset_split == "train"
        eval_args = parse_config(eval_script.dataclass_types(), ["--config", str(folder / "eval.yaml")])[0]
        assert eval_args.dataset_split == "test"
        dpo_script, dpo_training, _ = parse_config(dpo.dataclass_types(), ["--config", str(folder / "dpo.yaml")])
        assert yaml.safe_load((folder / "dpo.yaml").read_text())["bf16"] is True  # float32 only without a GPU
        if scale == "paper":
            assert pairs_args.num_prompts == 25000 and pairs_args.pair_mode == "all"
            assert dpo_script.sweep == ["beta=0.05", "beta=0.1", "beta=1.0", "beta=5.0"]
            assert dpo_training.learning_rate == 1e-6 and dpo_training.warmup_steps == 150
            assert dpo_training.per_device_train_batch_size * dpo_training.gradient_accumulation_steps == 64
        else:
            assert pairs_args.num_prompts == 1000 and pairs_args.completions_per_prompt == 4
            assert dpo_script.sweep == ["beta=0.05", "beta=0.1", "beta=1.0"]
            assert dpo_training.learning_rate == 2e-5
        (rl_args, rl_training, _) = parse_config(rl.dataclass_types(), ["--config", str(folder / "rl.yaml")])
        assert rl_args.classifier_name_or_path == "siebert/sentiment-roberta-large-english"
        assert {entry.split(",")[1] for entry in rl_args.sweep} == {"reward=classifier", "reward=reward_model"}
        assert rl_args.reward_model_path == f"runs/{scale}/reward_model" and rl_training.bf16 is not None
    sft_script, sft_training, sft_model = parse_config(
        sft.dataclass_types(), ["--config", str(REPO / "configs/gpt2-large/sft.yaml")])
    assert sft_model.model_name_or_path == "gpt2-large" and sft_script.dataset_name == "stanfordnlp/imdb"
    assert sft_training.num_train_epochs == 1


def test_command_line_wins_over_the_file():
    import dpo

    _, training, _ = parse_config(dpo.dataclass_types(),
                                  ["--config", str(REPO / "configs/tiny/dpo.yaml"), "--learning_rate", "0.01"])
    assert training.learning_rate == 0.01


def test_unknown_keys_are_errors(tmp_path):
    import dpo

    config = tmp_path / "bad.yaml"
    config.write_text((REPO / "configs/tiny/dpo.yaml").read_text() + "betta: 0.5\n")
    with pytest.raises(PipelineError, match="unknown config key.*betta"):
        parse_config(dpo.dataclass_types(), ["--config", str(config)])
    with pytest.raises(PipelineError, match="betta"):
        parse_config(dpo.dataclass_types(), ["--config", str(REPO / "configs/tiny/dpo.yaml"), "--betta", "0.5"])
    config.write_text("- just\n- a list\n")
    with pytest.raises(PipelineError, match="mapping"):
        parse_config(dpo.dataclass_types(), ["--config", str(config)])
    with pytest.raises(PipelineError, match="does not exist"):
        parse_config(dpo.dataclass_types(), ["--config", str(tmp_path / "missing.yaml")])


def test_readme_and_docs_commands_name_existing_scripts_configs_and_pages():
    readme = (REPO / "README.md").read_text()
    pages = [readme, *(path.read_text() for path in sorted((REPO / "docs").glob("*.md")))]
    commands = [command for page in pages
                for command in re.findall(r"(?:python|launch .*?) (\S+\.py|-m \S+) --config (\S+\.yaml)", page)]
    assert len(commands) >= 20
    for script, config in commands:
        if script.startswith("-m"):
            assert (REPO / (script.split()[1].replace(".", "/") + ".py")).is_file(), script
        else:
            assert (REPO / script).is_file(), script
        assert (REPO / config).is_file(), config
    for page in pages:  # every link to a page or figure of the repository leads somewhere
        for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png|csv))(?:#[\w-]+)?\)", page):
            assert (REPO / target).is_file() or (REPO / "docs" / target).is_file(), target
    makefile = (REPO / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("scale", ["tiny", "gpt2-large"])
def test_the_leaderboard_configs_pass_their_methods_checks_with_two_knob_values_and_three_seeds(scale, tmp_path):
    """Every entry of methods.yaml as dpo.py plans it: its method's checks pass, its trainer's config keeps the live
    evaluation; at least 8 methods besides DPO, each at 2 knob values x 3 seeds; online DPO with both rewards."""
    import dpo
    import rl
    from dpo_pipeline.methods import method_sweep_keys, series_of, sweep_entry_method
    from dpo_pipeline.stages.dpo import DATA_SWEEP_KEYS
    from dpo_pipeline.sweep import plan_sweep

    config = REPO / "configs" / scale / "methods.yaml"
    script_args, training_args, _ = parse_config(dpo.dataclass_types(), ["--config", str(config), "--output_dir",
                                                                         str(tmp_path)])
    settings_per_series: dict[str, set] = {}
    for name, overrides, args in plan_sweep(training_args, script_args.sweep, "methods",
                                            data_keys=DATA_SWEEP_KEYS + method_sweep_keys()):
        method, keys = sweep_entry_method(overrides, name)
        method.check(args, keys, name)
        prepared = method.prepare(args, keys)
        assert prepared.live_eval_config == training_args.live_eval_config
        settings = {"method": method.name, **method.settings(prepared, keys)}
        knob = tuple(sorted((key, str(value)) for key, value in overrides.items() if key != "seed"))
        settings_per_series.setdefault(series_of(settings), []).append((knob, overrides.get("seed", "0")))
    assert len(settings_per_series) >= 8 and "DPO" not in settings_per_series
    for series, runs in settings_per_series.items():
        knobs = {knob for knob, _ in runs}
        assert len(knobs) == 2 and sorted(runs) == sorted((knob, seed) for knob in knobs for seed in "012"), series
    online_args = parse_config(rl.dataclass_types(), ["--config", str(config.with_name("methods_online.yaml"))])[0]
    entries = [dict(part.split("=") for part in entry.split(",")) for entry in online_args.sweep]
    assert {entry["method"] for entry in entries} == {"online_dpo"}
    assert {entry["reward"] for entry in entries} == {"classifier", "reward_model"}
