"""The method registry: every way of getting a policy that the frontier compares, behind one interface, found by name.

A method is what a run's sweep_run.json names in `method`: DPO (with each of TRL's loss types), the reference-free
SimPO and ORPO, KTO (unpaired examples of the pairs, against the reference), the unlikelihood baseline (trained by
dpo.py: a sweep entry `method=<name>` chooses it), Preferred-FT (sft.py), online RL (rl.py), and the SFT model and
best-of-N sampling (eval.py). The shared code never tests a method's name:
dpo.py asks the registry for the method of each sweep entry (its settings, checks, trainer, whether it trains against
a reference), eval.py for how its held-out implicit reward is defined, the report for its label, family and plot
style. The built-in methods are the modules of this folder, found by listing it; a method of your own lives anywhere
on the Python path and is named in the environment variable `DPO_PIPELINE_METHODS` (module names, comma-separated):

    DPO_PIPELINE_METHODS=my_methods.cpo python dpo.py --config configs/tiny/dpo.yaml --sweep method=cpo,beta=0.1

docs/architecture.md shows SimPO, written as one file, as the worked example, and examples/cpo_method/cpo.py (TRL's
CPO) as a method of one's own.
"""

from __future__ import annotations

import importlib
import math
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import PipelineError

METHOD_MODULES_VARIABLE = "DPO_PIPELINE_METHODS"
# The method of a sweep entry that names none, and of a run whose sweep_run.json predates the field.
DEFAULT_METHOD = "dpo"

FAMILIES = ("reference", "baseline", "reference-free", "online RL", "sampling")


def number_key(key: str, *, above_zero: bool = False) -> Callable[[str], float]:
    """The parser of a method's numeric sweep key (`Method.sweep_keys`): a finite number >= 0 (> 0 with
    `above_zero`), else a ValueError naming the key, which the sweep turns into one line."""
    def parse(raw: str) -> float:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a number") from None
        if not math.isfinite(number) or (number <= 0 if above_zero else number < 0):
            raise ValueError(f"{key} must be a finite number {'>' if above_zero else '>='} 0, got {raw!r}")
        return number

    return parse


def log_ratio_margin(chosen, rejected, reference_chosen, reference_rejected, chosen_lengths, rejected_lengths):
    """DPO's implicit reward margin per pair, without beta: (log pi - log pi_ref)(chosen) - (log pi -
    log pi_ref)(rejected), [P] tensors in (the completions' summed log-probs and their lengths), [P] float64 out."""
    return (chosen.double() - reference_chosen.double()) - (rejected.double() - reference_rejected.double())


@dataclass(frozen=True)
class Method:
    """A method's parts, as the shared stages use them. `settings` is a frontier row or a sweep_run.json (its
    method's fields: beta, loss_type, label_smoothing and the method's own sweep keys).

    What every method has:
    - `name`: sweep_run.json's `method`; `title`: the series' name ("DPO", "SimPO");
    - `family`: one of `FAMILIES`: "reference" (a preference loss against the reference model), "reference-free",
      "baseline" (Preferred-FT, Unlikelihood), "online RL", "sampling" (the SFT model, best-of-N): the frontier's
      panels and the leaderboard's groups;
    - `label(settings) -> str`: the series' label ("DPO β=0.1", "SimPO β=2 γ=0.5");
    - `marker`, `linestyle`: its plot style (matplotlib's; `linestyle` may be a function of the settings: DPO's loss
      types, RL's rewards);
    - `knob`: the setting that traces its curve (beta, alpha, ...), as the leaderboard names it;
    - `held_out_margin`: how its held-out implicit reward is defined, without beta: a function of the [P] summed
      log-probs of the chosen and rejected completions under the policy and the reference and their [P] lengths,
      giving the [P] margins (chosen minus rejected): `log_ratio_margin` (DPO's, the default; eval.py's held-out
      reward margin is beta times it where the run has a beta), or SimPO's length-normalised log-probs (no
      reference);
    - `order`: where its series stand in tables and plots (DPO first);
    - `series(settings) -> str`: the curve a run belongs to, its label without the knob's value ("IPO", "RLOO (true
      reward)", "SimPO γ=0.5"): the settings of one series differ only by the knob, and the leaderboard reads
      each series along its knob (default: the title);
    - `on_the_dpo_curve(settings) -> bool`: whether a run of it draws the DPO curve the README's claims compare
      every other setting with (DPO with the sigmoid loss; nothing else).

    What a method that dpo.py trains has (`trainer` set):
    - `sweep_keys`: its settings that are no field of dpo.py's config, each with its parser (unlikelihood's
      `alpha`); a sweep entry gives them beside `method=<name>`;
    - `check(args, keys, where)`: its checks of dpo.py's config (a DPOConfig, the entry's overrides applied) and
      its keys, the same for flags and sweep entries, before anything is loaded;
    - `prepare(args, keys) -> args`: the config its trainer takes, from dpo.py's (a DPOConfig for TRL's
      DPOTrainer; TRL's CPOConfig for SimPO, say);
    - `trainer(**kwargs) -> Trainer`: its trainer (model, ref_model, args, train_dataset, eval_dataset,
      processing_class, quantization_config, peft_config, callbacks, keys, reference_cache);
    - `uses_reference`: whether it trains against a reference model (the reference log-probs, a ref_model);
    - `settings(args, keys) -> dict`: what its runs' sweep_run.json records (beta, loss_type, label_smoothing, its
      keys), which eval.py and the report read back;
    - `logged`: the prefix of its trainer's logs the run's summary keeps ("rewards/" for DPO's implicit rewards).
    """

    name: str
    title: str
    family: str
    label: Callable[[Mapping], str]
    marker: str = "o"
    linestyle: object = "-"
    knob: str | None = "beta"
    held_out_margin: Callable = log_ratio_margin
    on_the_dpo_curve: Callable[[Mapping], bool] = lambda settings: False
    trainer: Callable | None = None
    sweep_keys: Mapping[str, Callable[[str], object]] = field(default_factory=dict)
    check: Callable = lambda args, keys, where: None
    prepare: Callable = lambda args, keys: args
    uses_reference: bool = True
    settings: Callable = lambda args, keys: {"beta": args.beta, "loss_type": list(args.loss_type),
                                             "label_smoothing": args.label_smoothing, **keys}
    logged: str = "rewards/"
    order: int = 100  # where its series stand in tables and plots: DPO first, the sampling baselines last
    series: Callable[[Mapping], str] | None = None  # the curve a setting belongs to: its label without the knob

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise PipelineError(f"method {self.name}: family {self.family!r} is not one of {', '.join(FAMILIES)}")


_METHODS: dict[str, Method] = {}
_discovered = False


def register_method(method: Method) -> Method:
    """Make `method` available by its name (a method module calls this when it is imported)."""
    known = _METHODS.get(method.name)
    if known is not None and known is not method:
        raise PipelineError(f"two methods are named {method.name!r}: {known.title!r} and {method.title!r}")
    _METHODS[method.name] = method
    return method


def _discover() -> None:
    """Import every method module of this folder and every module named in DPO_PIPELINE_METHODS, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for name in filter(None, (part.strip() for part in os.environ.get(METHOD_MODULES_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise PipelineError(f"{METHOD_MODULES_VARIABLE}: cannot import the method module {name!r} ({error}); put "
                                "its folder on PYTHONPATH") from None


def methods() -> list[Method]:
    """Every registered method, in their `order` (the report's order of series), then as registered."""
    _discover()
    return sorted(_METHODS.values(), key=lambda method: method.order)


def get_method(name: str | None) -> Method:
    """The method registered as `name` (None: DPO, as runs that predate the field); a `PipelineError` listing the
    known ones otherwise."""
    _discover()
    name = name or DEFAULT_METHOD
    if name not in _METHODS:
        raise PipelineError(f"method: {name!r} is not a method; the methods are {', '.join(_METHODS)} (a method of "
                            f"your own is named in {METHOD_MODULES_VARIABLE}, see docs/architecture.md)")
    return _METHODS[name]


def trained_by_dpo_py() -> list[Method]:
    return [method for method in methods() if method.trainer is not None]


def series_label(settings: Mapping) -> str:
    """How a run is named in plots and tables: its method's label, with the share of flipped training labels of a
    label-noise run."""
    label = get_method(settings.get("method")).label(settings)
    noise = float(settings.get("label_noise") or 0)
    if noise:
        label += f", {noise:.0%} flipped"
    return label


def series_of(settings: Mapping) -> str:
    """The curve a run belongs to (`Method.series`), with the share of flipped labels of a label-noise run."""
    method = get_method(settings.get("method"))
    name = method.series(settings) if method.series is not None else method.title
    noise = float(settings.get("label_noise") or 0)
    if noise:
        name += f", {noise:.0%} flipped"
    return name


def sweep_entry_method(overrides: Mapping[str, str], where: str) -> tuple[Method, dict]:
    """(method, its keys parsed) of a dpo.py sweep entry: `method=<name>` (default DPO) and the method's own keys; a
    key of another method is refused, naming the method it belongs to."""
    _discover()
    name = overrides.get("method", DEFAULT_METHOD)
    if name not in _METHODS or _METHODS[name].trainer is None:
        trainable = ", ".join(m.name for m in trained_by_dpo_py())
        raise PipelineError(f"{where}: method={name} is not one dpo.py trains: {trainable} (a method of your own is "
                            f"named in {METHOD_MODULES_VARIABLE})")
    method = _METHODS[name]
    keys = {}
    for key, raw in overrides.items():
        if key in method.sweep_keys:
            try:
                keys[key] = method.sweep_keys[key](raw)
            except (TypeError, ValueError) as error:  # the parser's message names the key and the value
                raise PipelineError(f"{where}: {error}") from None
            continue
        owners = [m.name for m in trained_by_dpo_py() if key in m.sweep_keys]
        if owners:
            raise PipelineError(f"{where}: {key} is a setting of method {' or '.join(owners)}; add "
                                f"method={owners[0]} (this entry trains {method.name})")
    return method, keys


def method_sweep_keys() -> tuple[str, ...]:
    """Every sweep key that chooses a method or is a method's own setting (not a field of dpo.py's config)."""
    return ("method", *dict.fromkeys(key for method in trained_by_dpo_py() for key in method.sweep_keys))
