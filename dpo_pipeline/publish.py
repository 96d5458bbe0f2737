"""Publishing a finished run to the Hugging Face Hub (`push_to_hub: true`): the final model folder alone, once, after
the run is complete, with a model card.

transformers' Trainer pushes the whole output_dir (at every save with its default hub_strategy, and at the end from
`save_model`): here that folder also holds the checkpoints, the staging folder of the final weights, wandb's files
and the run's records, and a LoRA run's adapters before they are merged. So the Trainer is given push_to_hub false
(`trainer_args`), and once the final weights are in place (merged, checked finite, the run marked complete:
`training_run.TrainingRun.finish`) the main process uploads exactly the files of the final model and the model card:
TRL's own card (the trainer's `create_model_card`) followed by the run's settings and, where the live evaluation
measured the final model (eval.py's sampler, prompts and seed: the same figures eval.py gives), its reward and KL.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import PipelineError

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
# The run's settings the card states (from its training config), where they are set.
CARD_SETTINGS = ("beta", "loss_type", "learning_rate", "num_train_epochs", "max_steps", "global_batch_size", "seed",
                 "max_length", "bf16")


def trainer_args(args):
    """The config the Trainer gets: push_to_hub off (the pipeline publishes the run itself, `publish_run`)."""
    from .arguments.common import replace_config

    return replace_config(args, push_to_hub=False) if getattr(args, "push_to_hub", False) else args


def repo_id_of(args, run_dir: Path) -> str:
    return args.hub_model_id or run_dir.name


def card_sections(args, run_dir: Path) -> str:
    """What the pipeline adds to TRL's model card: the run's settings and its last live-evaluation figures."""
    lines = ["", "## Training run", "", f"Trained with the dpo-pipeline's `{run_dir.name}` run:", ""]
    for name in CARD_SETTINGS:
        value = getattr(args, name, None)
        if value is not None and value != -1:
            lines.append(f"- `{name}`: {value}")
    metrics = run_dir / "metrics.jsonl"
    live = []
    if metrics.is_file():
        live = [record for record in map(json.loads, metrics.read_text().splitlines()) if "live/reward" in record
                or "live/kl" in record]
    if live:
        last = live[-1]
        figures = [f"KL to the reference {last['live/kl']:.2f} ± {last.get('live/kl_sem', 0.0):.2f} nats"]
        if last.get("live/reward") is not None:
            figures.insert(0, f"reward {last['live/reward']:.3f} ± {last.get('live/reward_sem', 0.0):.3f}")
        lines += ["", f"Measured at step {last['step']} by eval.py's sampler on its held-out prompts "
                      f"({last.get('live/num_prompts', '?')} prompts): {', '.join(figures)}."]
    return "\n".join(lines) + "\n"


def publish_run(trainer, args, run_dir: Path, model_files: list[str]) -> str:
    """Upload the final model of `run_dir` (`model_files`, the files the final save put there) and its model card to
    the Hub repository `hub_model_id` (default: the run folder's name), once; returns the repository id. The token
    is huggingface_hub's own (HF_TOKEN, or the one `keep_hub_token_out_of_checkpoints` moved there)."""
    from huggingface_hub import HfApi

    repo_id = repo_id_of(args, run_dir)
    trainer.hub_model_id = repo_id  # TRL's card names the repository (the Trainer sets it only when it pushes)
    trainer.create_model_card(model_name=run_dir.name, tags=["dpo-pipeline"])
    card = run_dir / MODEL_CARD
    card.write_text((card.read_text() if card.is_file() else f"# {repo_id}\n") + card_sections(args, run_dir))
    api = HfApi()
    try:
        api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(run_dir), allow_patterns=[*model_files, MODEL_CARD],
                          commit_message=f"{run_dir.name}: the final model of a finished dpo-pipeline run")
    except Exception as error:  # noqa: BLE001 - the network, the token, the repository: one line, the run is kept
        raise PipelineError(f"push_to_hub: uploading {run_dir} to {repo_id} failed ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'no message'}); the run is complete on "
                            "disk: upload the folder's model files and README.md yourself") from None
    logger.info("Published %s (%s) to the Hub repository %s", run_dir, ", ".join([*model_files, MODEL_CARD]),
                repo_id)
    return repo_id


def published_model_files(names: list[str]) -> list[str]:
    """The final save's files that make up the model (weights, configs, tokenizer), not the Trainer's records."""
    records = {"training_args.bin", "trainer_state.json"}
    return sorted(name for name in names if name not in records and not name.startswith("."))


def require_the_hub_for_publishing(args) -> None:
    """push_to_hub needs the Hub: with HF_HUB_OFFLINE=1 the run would train and then fail to upload; stop first."""
    if getattr(args, "push_to_hub", False) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise PipelineError("push_to_hub: HF_HUB_OFFLINE=1 is set, so nothing can be uploaded; unset it or drop "
                            "push_to_hub")
