"""`stream-detector tune`: an Optuna search over one model's recipe, driven by a config file.

A study names one detector kind, the channels it is judged on, the fixed parts of its
recipe and the ranges to search (model hyperparameters, fit settings, threshold and episode
settings). Each trial trains the model per channel through the same trainer `evaluate` uses
and returns one number:

- ``val_loss`` (minimised, label-free): the mean over channels of the best validation loss,
  on the validation windows carved from each channel's *train* split. Only the model and fit
  can be searched against it: a threshold does not change a loss.
- ``injected_f1`` (maximised, label-free): event F1 on synthetic anomalies injected into
  each channel's held-out train part (`threshold_grid.held_out_injection`, as the
  threshold race uses), so thresholds and episode rules can be searched without any label.
- ``event_f1`` / ``composite_f1`` (maximised): the channels' test splits streamed through
  the daemon's engine, exactly as `evaluate` does, scored against the labels. This reads the
  *test labels*, so a study's best value is an optimistic, in-sample number: report held-out
  results from `evaluate` on other channels, never this one.

The config file is TOML (or JSON with the same shape); see ``docs/tune-example.toml``.
"""

from __future__ import annotations

import csv
import json
import math
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream_detector.data.smap_msl import LabelRow, load_series
from stream_detector.evaluation.metrics import ChannelCounts, summarise
from stream_detector.evaluation.runner import (
    ModelRecipe,
    dataset_rows,
    evaluate_channel,
    train_channel,
)
from stream_detector.evaluation.threshold_grid import held_out_injection, judge_injected
from stream_detector.models.base import FitConfig, accepted_hyperparameters, get_detector_class
from stream_detector.serving import ServedModel
from stream_detector.settings import AlertSettings, Settings, ThresholdSettings

log = structlog.get_logger(__name__)

Objective = Literal["val_loss", "injected_f1", "event_f1", "composite_f1"]
# The recipe's own fields that a study may search beside the detector's hyperparameters.
RECIPE_KEYS = frozenset({"window", "train_stride"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamRange(_Strict):
    """One searched value: ``choices``, or ``low``..``high`` (ints if both bounds are ints)."""

    choices: list[Any] | None = None
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
        elif self.low is None or self.high is None:
            raise ValueError("a range needs both 'low' and 'high' (or use 'choices')")
        elif self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            if all(c is None or isinstance(c, str | int | float | bool) for c in self.choices):
                return trial.suggest_categorical(name, self.choices)
            # Optuna stores only plain values: lists (layer sizes) travel as JSON text.
            return json.loads(
                trial.suggest_categorical(name, [json.dumps(c) for c in self.choices])
            )
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class StudySection(_Strict):
    name: str = "stream-detector"
    objective: Objective = "val_loss"
    trials: int = Field(default=20, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    # An Optuna storage URL ("sqlite:///artifacts/tune/study.db") makes a study resumable.
    storage: str | None = None
    # Stop a trial early when its running value is worse than the median of earlier trials.
    prune: bool = True


class DataSection(_Strict):
    dataset: Literal["smap", "msl", "both"] = "smap"
    channels: list[str] | None = None
    root: Path | None = None


class ModelSection(_Strict):
    kind: str
    window: int = Field(default=50, ge=2)
    train_stride: int = Field(default=1, ge=1)
    hyperparameters: dict[str, Any] = Field(default_factory=lambda: {"score_features": [0]})


class SearchSection(_Strict):
    model: dict[str, ParamRange] = Field(default_factory=dict)
    fit: dict[str, ParamRange] = Field(default_factory=dict)
    threshold: dict[str, ParamRange] = Field(default_factory=dict)
    alerts: dict[str, ParamRange] = Field(default_factory=dict)


class TuneConfig(_Strict):
    study: StudySection = Field(default_factory=StudySection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection
    fit: dict[str, Any] = Field(default_factory=dict)
    threshold: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    search: SearchSection = Field(default_factory=SearchSection)

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        try:
            get_detector_class(self.model.kind)
        except KeyError as exc:  # its message names the registered kinds
            raise ValueError(f"model.kind: {exc.args[0]}") from None
        accepted = set(accepted_hyperparameters(self.model.kind))
        for section, names in (
            ("model.hyperparameters", set(self.model.hyperparameters)),
            ("search.model", set(self.search.model) - RECIPE_KEYS),
        ):
            if names - accepted:
                raise ValueError(
                    f"{section}: {self.model.kind} takes no {sorted(names - accepted)}; "
                    f"it takes {sorted(accepted)}"
                )
        FitConfig(**self.fit)  # unknown or invalid fit settings fail before any trial
        if self.study.objective == "val_loss" and (self.search.threshold or self.search.alerts):
            raise ValueError(
                "search.threshold / search.alerts need an objective that judges alerts "
                "(injected_f1, event_f1 or composite_f1): a threshold does not change the "
                "validation loss"
            )
        unknown_fit = set(self.search.fit) - set(FitConfig.__dataclass_fields__)
        if unknown_fit:
            raise ValueError(f"search.fit: unknown fit settings {sorted(unknown_fit)}")
        for section, known in (
            ("threshold", ThresholdSettings.model_fields),
            ("alerts", AlertSettings.model_fields),
        ):
            searched = getattr(self.search, section)
            # A strategy's own parameters are searched as "params.NAME" (threshold.params).
            unknown = {
                k for k in searched if not (section == "threshold" and k.startswith("params."))
            } - set(known)
            if unknown:
                raise ValueError(f"search.{section}: unknown settings {sorted(unknown)}")
        return self

    @property
    def minimise(self) -> bool:
        return self.study.objective == "val_loss"


def load_tune_config(path: Path) -> TuneConfig:
    """Read and validate a study file; errors name the file and the offending setting."""
    text = Path(path).read_text()
    try:
        raw = json.loads(text) if Path(path).suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "JSON" if Path(path).suffix == ".json" else "TOML"
        raise ValueError(f"{path}: not valid {kind}: {exc}") from None
    try:
        return TuneConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


@dataclass(frozen=True)
class TrialPlan:
    """What one trial trains and how it judges: the config with the trial's choices applied."""

    recipe: ModelRecipe
    settings: Settings
    params: dict[str, Any]


def plan_trial(config: TuneConfig, base: Settings, trial: Any) -> TrialPlan:
    """Ask the trial for every searched value and build the recipe and settings from them."""
    chosen: dict[str, dict[str, Any]] = {}
    for section in ("model", "fit", "threshold", "alerts"):
        ranges: dict[str, ParamRange] = getattr(config.search, section)
        chosen[section] = {
            name: r.suggest(trial, f"{section}.{name}") for name, r in ranges.items()
        }
    recipe_fields = {k: v for k, v in chosen["model"].items() if k in RECIPE_KEYS}
    hyperparameters = {
        **config.model.hyperparameters,
        **{k: v for k, v in chosen["model"].items() if k not in RECIPE_KEYS},
    }
    recipe = ModelRecipe(
        kind=config.model.kind,
        window=int(recipe_fields.get("window", config.model.window)),
        hyperparameters=hyperparameters,
        fit=FitConfig(**{**config.fit, **chosen["fit"]}),
        train_stride=int(recipe_fields.get("train_stride", config.model.train_stride)),
    )
    threshold = {**base.threshold.model_dump(), **config.threshold}
    for name, value in chosen["threshold"].items():
        if name.startswith("params."):
            threshold["params"] = {**threshold.get("params", {}), name[len("params.") :]: value}
        else:
            threshold[name] = value
    alerts = {**base.alerts.model_dump(), **config.alerts, **chosen["alerts"]}
    settings = base.model_copy(
        update={"threshold": ThresholdSettings(**threshold), "alerts": AlertSettings(**alerts)}
    )
    params = {f"{s}.{k}": v for s, values in chosen.items() for k, v in values.items()}
    return TrialPlan(recipe=recipe, settings=settings, params=params)


def study_rows(config: TuneConfig, root: Path) -> dict[str, list[LabelRow]]:
    """Label rows per channel of the study's data set (P-2's two rows train once)."""
    rows = dataset_rows(root, config.data.dataset)
    if config.data.channels:
        unknown = set(config.data.channels) - {r.chan_id for r in rows}
        if unknown:
            raise ValueError(f"data.channels: no label row for {sorted(unknown)}")
        rows = [r for r in rows if r.chan_id in set(config.data.channels)]
    grouped: dict[str, list[LabelRow]] = {}
    for row in rows:
        grouped.setdefault(row.chan_id, []).append(row)
    return grouped


def judge_plan(
    config: TuneConfig,
    plan: TrialPlan,
    root: Path,
    grouped: dict[str, list[LabelRow]],
    report: Callable[[float, int], bool] | None = None,
) -> float:
    """The trial's objective over every channel; ``report(value, step)`` may stop it early."""
    losses: list[float] = []
    counts: list[ChannelCounts] = []
    value = math.nan
    for step, (chan, rows) in enumerate(grouped.items()):
        if config.study.objective == "val_loss":
            checkpoint = train_channel(root, chan, plan.recipe)
            val_losses = checkpoint.fit["history"]["val_loss"]
            if not val_losses:
                raise ValueError(f"{chan}: too few training windows for a validation split")
            losses.append(float(min(val_losses)))
            value = sum(losses) / len(losses)
        elif config.study.objective == "injected_f1":
            checkpoint = train_channel(root, chan, plan.recipe)
            injected = held_out_injection(load_series(root, chan, "train"), chan, checkpoint.window)
            counts.append(judge_injected(plan.settings, ServedModel(checkpoint), chan, injected))
            value = summarise(counts).f1
        else:
            outcomes = evaluate_channel(root, rows, plan.recipe, plan.settings)
            counts.extend(o.counts for o in outcomes)
            metrics = summarise(counts)
            value = metrics.f1 if config.study.objective == "event_f1" else metrics.composite_f1
        if report is not None and report(value, step):
            break
    return value


@dataclass
class TuneResult:
    best_value: float
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    trials_csv: Path
    best_json: Path
    plot: Path | None


def run_study(
    config: TuneConfig,
    base: Settings,
    out_dir: Path,
    *,
    trials: int | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run the study and write trials.csv, best.json and history.png to ``out_dir``."""
    import optuna

    root = config.data.root or base.data.root
    grouped = study_rows(config, root)
    if not grouped:
        raise ValueError(f"no labelled channels in {config.data.dataset}")
    if config.study.objective in ("event_f1", "composite_f1"):
        log.warning(
            "tuning_on_test_labels",
            objective=config.study.objective,
            note="the best value is in-sample; report held-out results from `evaluate`",
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if config.study.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=config.study.name,
        storage=config.study.storage,
        load_if_exists=config.study.storage is not None,
        direction="minimize" if config.minimise else "maximize",
        sampler=optuna.samplers.TPESampler(seed=config.study.seed),
        pruner=pruner,
    )
    seconds: dict[int, float] = {}

    def objective(trial: optuna.Trial) -> float:
        plan = plan_trial(config, base, trial)
        started = time.perf_counter()

        def report(value: float, step: int) -> bool:
            trial.report(value, step)
            if trial.should_prune():
                seconds[trial.number] = time.perf_counter() - started
                raise optuna.TrialPruned(f"value {value:.4g} after {step + 1} channels")
            return False

        value = judge_plan(config, plan, root, grouped, report)
        seconds[trial.number] = time.perf_counter() - started
        log.info("trial_finished", trial=trial.number, value=round(value, 5), **plan.params)
        return value

    study.optimize(
        objective,
        n_trials=trials or config.study.trials,
        timeout=config.study.timeout_s,
        catch=(ValueError, FloatingPointError),
        show_progress_bar=progress,
    )
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError("no trial completed; see the log for the failed trials' errors")
    best = study.best_trial
    out_dir.mkdir(parents=True, exist_ok=True)
    trials_csv = out_dir / "trials.csv"
    names = sorted({k for t in study.trials for k in t.params})
    with trials_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "state", config.study.objective, "seconds", *names])
        for t in study.trials:
            writer.writerow(
                [
                    t.number,
                    t.state.name.lower(),
                    "" if t.value is None else f"{t.value:.6g}",
                    f"{seconds.get(t.number, math.nan):.1f}",
                    *[t.params.get(n, "") for n in names],
                ]
            )
    best_plan = plan_trial(config, base, optuna.trial.FixedTrial(best.params))
    best_config = {
        "objective": config.study.objective,
        "value": best.value,
        "trial": best.number,
        "dataset": config.data.dataset,
        "channels": list(grouped),
        "recipe": best_plan.recipe.describe(),
        "threshold": best_plan.settings.threshold.model_dump(),
        "alerts": best_plan.settings.alerts.model_dump(),
    }
    best_json = out_dir / "best.json"
    best_json.write_text(json.dumps(best_config, indent=2) + "\n")
    plot = _plot_history(study, config, out_dir / "history.png")
    return TuneResult(
        best_value=float(best.value) if best.value is not None else math.nan,
        best_params=dict(best.params),
        best_config=best_config,
        trials_csv=trials_csv,
        best_json=best_json,
        plot=plot,
    )


def _plot_history(study: Any, config: TuneConfig, path: Path) -> Path | None:
    """Each trial's value and the best so far; pruned trials' last reported value in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [(t.number, t.value) for t in study.trials if t.value is not None]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in study.trials
        if t.state.name == "PRUNED" and t.intermediate_values
    ]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*zip(*done, strict=True), "o", label="trial")
    if pruned:
        ax.plot(*zip(*pruned, strict=True), "x", color="grey", label="pruned (last value)")
    best: list[float] = []
    for _, value in done:
        if best and (value >= best[-1] if config.minimise else value <= best[-1]):
            value = best[-1]
        best.append(float(value))
    ax.step([n for n, _ in done], best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(config.study.objective)
    ax.set_title(f"{config.study.name}: {config.model.kind} on {config.data.dataset}")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
