# The two commands of the README, and the steps they are made of.
#   make demo       the whole pipeline on the embedded offline default (2-core CPU, under 10 minutes)
#   make demo-chat  the chat task offline: a tiny chat model, DPO on conversational pairs, a judged report
#   make study      the demo plus 3 training seeds of each DPO beta and RL setting, the paper's baselines
#                   (Preferred-FT, Unlikelihood, RLOO with a learned and the true reward) and an LLM judge's win rates
#   make methods    the method leaderboard: TRL's preference methods (IPO, SLiC, robust DPO, NCA, APO, SimPO, ORPO,
#                   KTO) and online DPO with both rewards beside DPO, 2 knob values x 3 seeds each (after the demo)
#   make losses     IPO and robust DPO beside the demo's DPO runs (after the demo)
#   make label-noise  DPO on pairs with 20% and 40% of their labels flipped (after the demo)
#   make test       the test suite
#   make test-durations  the test suite, then where its time goes (the slowest tests, each file's time)
#   make rehearsal  every stage of the full-scale configs at full model shape on a CPU, from a stand-in Hub
#                   cache (docs/full-scale.md; ~14 GB of disk, ~20 GiB of memory at the peak)
#   make results    docs/results.md (and the README's figures) from the files the runs above left
#   make bench      the benchmark harness at GPT-2 Large's shape (a GPU machine; BENCH_CONFIG=bench/configs/tiny.yaml
#                   runs it on a CPU)
# Everything runs in .venv, created on first use from requirements.txt; finished steps are skipped on later runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CONFIGS ?= configs/tiny
CHAT_CONFIGS ?= configs/chat-tiny

# $(call timed,FILE,COMMAND): run COMMAND (echoed); the first time it succeeds, write its wall time in seconds to FILE,
# which make results reads (a later run that finds the step finished leaves the first figure alone).
define timed
	@echo '$(2)'; mkdir -p $(dir $(1)); start=$$(date +%s); $(2) || exit $$?; \
	test -e $(1) || echo $$(( $$(date +%s) - start )) > $(1)
endef
TIMINGS := runs/tiny/timings
CHAT_TIMINGS := runs/chat-tiny/timings

.PHONY: install assets sft pairs dpo eval demo preferred-ft unlikelihood reward-model rl judge dpo-study study methods methods-online losses label-noise test test-durations results clean-demo \
	bench \
	chat-assets chat-sft chat-dpo chat-eval demo-chat hub-standin rehearsal

install: $(INSTALLED)

# pip byte-compiles ~14,000 files on one core; compileall does it on every core (half the wall time on two), and
# leaves out what no run imports (tests, and transformers' model code other than the families the configs use): a
# module without a compiled file is compiled when it is imported, as usual.
COMPILE_SKIP := /tests?/|/testing/|/transformers/models/(?!(auto|gpt2|roberta|llama|mistral|qwen2|qwen3|gemma2?|phi3)/)
$(INSTALLED): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: the pinned \
	packages need Python 3.11 or newer, and $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing); install one \
	(Ubuntu 22.04: sudo apt install python3.11 python3.11-venv) and run make PYTHON=python3.11 ..." >&2; exit 1; }
	@start=$$(date +%s); test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	echo '$(PY) -m pip install -r requirements.txt'; \
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt || exit $$?; \
	$(PY) -m compileall -q -j 0 -x '$(COMPILE_SKIP)' $(VENV)/lib > /dev/null 2>&1; \
	echo $$(( $$(date +%s) - start )) > $(VENV)/install.seconds
	@touch $@

assets: install
	$(call timed,$(TIMINGS)/assets.seconds,$(PY) -m dpo_pipeline.tasks.sentiment.embedded --config $(CONFIGS)/assets.yaml)

sft: assets
	$(call timed,$(TIMINGS)/sft.seconds,$(PY) sft.py --config $(CONFIGS)/sft.yaml)

pairs: sft
	$(call timed,$(TIMINGS)/pairs.seconds,$(PY) preference_pairs.py --config $(CONFIGS)/pairs.yaml)

dpo: pairs
	$(call timed,$(TIMINGS)/dpo.seconds,$(PY) dpo.py --config $(CONFIGS)/dpo.yaml)

eval: dpo
	$(call timed,$(TIMINGS)/eval.seconds,$(PY) eval.py --config $(CONFIGS)/eval.yaml)

demo: eval
	@echo "Demo finished: report in runs/tiny/eval/report.md (frontier.png, frontier.csv beside it)"

preferred-ft: pairs
	$(call timed,$(TIMINGS)/preferred-ft.seconds,$(PY) sft.py --config $(CONFIGS)/preferred_ft.yaml)

# The paper's unlikelihood baseline, 4 weights alpha, into the DPO sweep folder (dpo.py, no reference model).
unlikelihood: pairs
	$(call timed,$(TIMINGS)/unlikelihood.seconds,$(PY) dpo.py --config $(CONFIGS)/unlikelihood.yaml)

# The paper's online RL baselines: a reward model learned from the pairs, then RLOO with it and with the true reward.
reward-model: pairs
	$(call timed,$(TIMINGS)/reward-model.seconds,$(PY) reward_model.py --config $(CONFIGS)/reward_model.yaml)

rl: reward-model
	$(call timed,$(TIMINGS)/rl.seconds,$(PY) rl.py --config $(CONFIGS)/rl.yaml)

# A judge for the LLM-judge win rates: the SFT model fine-tuned on the pairs' verdicts, both orders (no instruction
# model exists offline; configs/tiny/judge.yaml says what it is and is not).
judge: pairs
	$(call timed,$(TIMINGS)/judge.seconds,$(PY) sft.py --config $(CONFIGS)/judge.yaml)

# The study's DPO seeds (into the demo's sweep folder; the demo's runs are finished and skipped).
dpo-study: pairs
	$(call timed,$(TIMINGS)/dpo-study.seconds,$(PY) dpo.py --config $(CONFIGS)/dpo_study.yaml)

# Extends the demo. Its training steps need only the demo's pairs, not each other: they run STUDY_JOBS at a time,
# each on its share of the cores (two single-thread runs of a tiny model finish sooner than one after the other on
# two threads). Then eval.py measures the new models on STUDY_JOBS processes (torchrun: the models are shared out,
# the frontier is the one-process frontier) and judges every final model; evaluation is incremental.
CORES := $(shell nproc 2>/dev/null || echo 1)
STUDY_JOBS ?= $(shell n=$(CORES); echo $$(( n < 2 ? 1 : 2 )))
STUDY_THREADS ?= $(shell n=$(CORES); echo $$(( n / 2 < 1 ? 1 : n / 2 )))
STUDY_RUNS := preferred-ft unlikelihood rl judge dpo-study
study: demo
	@mkdir -p $(TIMINGS); date +%s > $(TIMINGS)/.study-start
	OMP_NUM_THREADS=$(STUDY_THREADS) $(MAKE) --no-print-directory -j$(STUDY_JOBS) $(STUDY_RUNS)
	$(call timed,$(TIMINGS)/eval-study.seconds,OMP_NUM_THREADS=$(STUDY_THREADS) $(STUDY_EVAL))
	@test -e $(TIMINGS)/study.seconds || echo $$(( $$(date +%s) - $$(cat $(TIMINGS)/.study-start) )) > $(TIMINGS)/study.seconds
	@echo "Study finished: report in runs/tiny/eval/report.md"
STUDY_EVAL = $(if $(filter 1,$(STUDY_JOBS)),$(PY),$(PY) -m torch.distributed.run --standalone --nproc_per_node $(STUDY_JOBS)) eval.py --config $(CONFIGS)/eval.yaml --judge_model_path runs/tiny/judge

# The method leaderboard (configs/tiny/methods.yaml, methods_online.yaml): the offline methods' sweep split into
# STUDY_JOBS shards (dpo.py --sweep_shard k/n, one folder), the study's DPO seeds, the reward model and online DPO,
# STUDY_JOBS at a time and the longest first (the sub-make is told STUDY_JOBS: nproc under OMP_NUM_THREADS=1 says 1); then eval.py measures the new final models (their checkpoints are not
# points of the leaderboard) and make results ranks the methods by true reward at matched KL.
METHOD_SHARDS := $(shell seq 0 $$(( $(STUDY_JOBS) - 1 )))
define method_shard
methods-shard-$(1): pairs
	$$(call timed,$$(TIMINGS)/methods-shard-$(1)-of-$$(STUDY_JOBS).seconds,$$(PY) dpo.py --config $$(CONFIGS)/methods.yaml --sweep_shard $(1)/$$(STUDY_JOBS))
.PHONY: methods-shard-$(1)
endef
$(foreach shard,$(METHOD_SHARDS),$(eval $(call method_shard,$(shard))))

methods-online: reward-model
	$(call timed,$(TIMINGS)/methods-online.seconds,$(PY) rl.py --config $(CONFIGS)/methods_online.yaml)

METHOD_RUNS := $(addprefix methods-shard-,$(METHOD_SHARDS)) dpo-study methods-online
methods: demo
	@mkdir -p $(TIMINGS); date +%s > $(TIMINGS)/.methods-start
	OMP_NUM_THREADS=$(STUDY_THREADS) $(MAKE) --no-print-directory -j$(STUDY_JOBS) STUDY_JOBS=$(STUDY_JOBS) $(METHOD_RUNS)
	$(call timed,$(TIMINGS)/eval-methods.seconds,OMP_NUM_THREADS=$(STUDY_THREADS) $(METHODS_EVAL))
	@test -e $(TIMINGS)/methods.seconds || echo $$(( $$(date +%s) - $$(cat $(TIMINGS)/.methods-start) )) > $(TIMINGS)/methods.seconds
	@echo "Methods finished: report in runs/tiny/eval/report.md; make results writes the leaderboard into the README"
METHODS_EVAL = $(if $(filter 1,$(STUDY_JOBS)),$(PY),$(PY) -m torch.distributed.run --standalone --nproc_per_node $(STUDY_JOBS)) eval.py --config $(CONFIGS)/eval.yaml --include_checkpoints false

# Other preference losses (configs/tiny/dpo_losses.yaml: IPO, robust DPO); eval.py measures only the new models.
losses: demo
	$(call timed,$(TIMINGS)/dpo-losses.seconds,$(PY) dpo.py --config $(CONFIGS)/dpo_losses.yaml)
	$(call timed,$(TIMINGS)/eval-losses.seconds,$(PY) eval.py --config $(CONFIGS)/eval.yaml)
	@echo "Other preference losses finished: report in runs/tiny/eval/report.md"

# DPO on pairs with flipped labels (configs/tiny/dpo_label_noise.yaml); eval.py measures only the new models.
label-noise: demo
	$(call timed,$(TIMINGS)/dpo-label-noise.seconds,$(PY) dpo.py --config $(CONFIGS)/dpo_label_noise.yaml)
	$(call timed,$(TIMINGS)/eval-label-noise.seconds,$(PY) eval.py --config $(CONFIGS)/eval.yaml)
	@echo "Label-noise study finished: runs/tiny/eval/label_noise.png"

# The chat task (configs/chat-tiny): conversations and conversational pairs from the embedded reviews, a chat model
# trained from scratch, a DPO sweep on the pairs, and an evaluation judged by the classifier and by an LLM judge.
chat-assets: assets
	$(call timed,$(CHAT_TIMINGS)/assets.seconds,$(PY) -m dpo_pipeline.tasks.chat.embedded --config $(CHAT_CONFIGS)/assets.yaml)

chat-sft: chat-assets
	$(call timed,$(CHAT_TIMINGS)/sft.seconds,$(PY) sft.py --config $(CHAT_CONFIGS)/sft.yaml)

chat-dpo: chat-sft
	$(call timed,$(CHAT_TIMINGS)/dpo.seconds,$(PY) dpo.py --config $(CHAT_CONFIGS)/dpo.yaml)

chat-eval: chat-dpo
	$(call timed,$(CHAT_TIMINGS)/eval.seconds,$(PY) eval.py --config $(CHAT_CONFIGS)/eval.yaml)

demo-chat: chat-eval
	@echo "Chat demo finished: report in runs/chat-tiny/eval/report.md"

# A stand-in Hugging Face cache (HF_HOME): the full-scale configs' repo ids at their shapes, random weights, text
# from the embedded reviews; then every full-scale stage, one process at a time, with HF_HUB_OFFLINE=1.
HUB_STANDIN ?= .cache/hub-standin
hub-standin: install
	nice -n 10 $(PY) tools/build_hub_cache.py --output_dir $(HUB_STANDIN)

rehearsal: hub-standin
	nice -n 10 $(PY) tools/rehearsal.py --hf_home $(HUB_STANDIN) --workdir .cache/rehearsal

results: install
	$(PY) -m tools.results

BENCH_CONFIG ?= bench/configs/gpt2-large.yaml
bench: install
	$(PY) -m bench.run --config $(BENCH_CONFIG)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The suite as make test runs it, with its 40 slowest phases, then each test file's time (tools/test_durations.py).
test-durations: install
	mkdir -p runs
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=40 --junitxml=runs/test-durations.xml tests
	$(PY) -m tools.test_durations runs/test-durations.xml

# Removes the demo's outputs (not the cached assets in .cache/embedded).
clean-demo:
	rm -rf runs/tiny generations/tiny runs/chat-tiny
