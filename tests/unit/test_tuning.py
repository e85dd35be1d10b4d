"""`stream-detector tune`: the study file, the trial plan, and short real studies on SMAP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from stream_detector.settings import Settings
from stream_detector.tuning import (
    ParamRange,
    TuneConfig,
    load_tune_config,
    plan_trial,
    run_study,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "smap_msl"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"SMAP/MSL data not found at {DATA}")
# The studies below search recent_max's margin: the first race's configuration, whatever
# the daemon's default is today.
RECENT_MAX = Settings(
    threshold={"kind": "recent_max"},
    alerts={"min_hits": 3, "hit_window": 5, "hold_down": 50, "lead": 0},
)


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
[model]
kind = "dense_ae"
"""


def test_example_config_in_docs_is_valid() -> None:
    config = load_tune_config(REPO / "docs" / "tune-example.toml")
    assert config.model.kind == "lstm_ae" and config.study.objective == "val_loss"
    assert config.search.model["hidden1"].is_int
    assert not config.search.fit["lr"].is_int and config.search.fit["lr"].log


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    config = load_tune_config(write(tmp_path, MINIMAL))
    assert config.study.objective == "val_loss" and config.minimise
    assert config.model.hyperparameters == {"score_features": [0]}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[model]\nkind = "no_such_model"', "no_such_model"),
        (MINIMAL + "[study]\nobjective = 'accuracy'", "study.objective"),
        (MINIMAL + "[study]\ntrials = 0", "study.trials"),
        (MINIMAL + "[fit]\nepochs = 0", "epochs must be at least 1"),
        (MINIMAL + "[search.model]\nhidden = { low = 8 }", "search.model.hidden"),
        (MINIMAL + "[search.model]\nhidden = { low = 9, high = 8 }", "low 9 is above high 8"),
        (MINIMAL + "[search.fit]\nlr = { low = 0.0, high = 1.0, log = true }", "low > 0"),
        (MINIMAL + "[search.fit]\nwarmup = { low = 1, high = 2 }", "search.fit: unknown"),
        (
            MINIMAL + "[search.threshold]\nk = { low = 2.0, high = 6.0 }",
            "objective that judges alerts",
        ),
        (
            MINIMAL + "[study]\nobjective = 'event_f1'\n[search.threshold]\nkay = {choices=[1]}",
            "search.threshold: unknown settings ['kay']",
        ),
        (MINIMAL + "[data]\ndataset = 'kepler'", "data.dataset"),
        (MINIMAL + "[search.model]\nlatent = { choices = [4] }", "dense_ae takes no ['latent']"),
        (MINIMAL + "[surprise]\nx = 1", "surprise"),
        ("[model\nkind = 'x'", "not valid TOML"),
    ],
)
def test_a_bad_study_file_names_the_setting(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ValueError, match=r"study\.toml") as caught:
        load_tune_config(write(tmp_path, text))
    assert named in str(caught.value)


def test_json_study_files_are_read_too(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"model": {"kind": "vae", "window": 30}}), "s.json")
    assert load_tune_config(path).model.window == 30


def test_ranges_ask_optuna_for_ints_floats_and_choices() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    assert isinstance(ParamRange(low=8, high=64, log=True).suggest(trial, "a"), int)
    value = ParamRange(low=1e-4, high=1e-2, log=True).suggest(trial, "b")
    assert isinstance(value, float) and 1e-4 <= value <= 1e-2
    assert ParamRange(choices=["x", "y"]).suggest(trial, "c") in {"x", "y"}
    assert ParamRange(choices=[[8, 4], [16, 8]]).suggest(trial, "d") in ([8, 4], [16, 8])
    assert isinstance(trial.distributions["a"], optuna.distributions.IntDistribution)
    assert trial.distributions["b"].log


def test_a_trial_plan_puts_each_choice_where_it_belongs(tmp_path: Path) -> None:
    config = load_tune_config(
        write(
            tmp_path,
            """
[study]
objective = "composite_f1"
[model]
kind = "dense_ae"
window = 40
hyperparameters = { score_features = [0], hidden = [16, 8] }
[fit]
epochs = 3
[threshold]
kind = "spot"
[alerts]
hold_down = 20
[search.model]
window = { choices = [30, 60] }
hidden = { choices = [[32, 16]] }
[search.fit]
lr = { low = 1e-3, high = 1e-2 }
[search.threshold]
"params.q" = { choices = [1e-3] }
warmup = { low = 50, high = 50 }
[search.alerts]
min_hits = { low = 2, high = 2 }
""",
        )
    )
    fixed = optuna.trial.FixedTrial(
        {
            "model.window": 60,
            "model.hidden": "[32, 16]",
            "fit.lr": 5e-3,
            "threshold.params.q": 1e-3,
            "threshold.warmup": 50,
            "alerts.min_hits": 2,
        }
    )
    plan = plan_trial(config, Settings(), fixed)
    assert plan.recipe.window == 60 and plan.recipe.fit.epochs == 3 and plan.recipe.fit.lr == 5e-3
    assert plan.recipe.hyperparameters == {"score_features": [0], "hidden": [32, 16]}
    assert plan.settings.threshold.kind == "spot"
    assert plan.settings.threshold.params == {"q": 1e-3}
    assert plan.settings.threshold.warmup == 50
    assert (plan.settings.alerts.min_hits, plan.settings.alerts.hold_down) == (2, 20)
    assert plan.params["model.window"] == 60


@pytest.fixture()
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@needs_data
def test_a_label_free_study_runs_and_writes_its_results(tmp_path: Path, one_thread) -> None:
    config = TuneConfig.model_validate(
        {
            "study": {"name": "t", "trials": 3, "prune": False},
            "data": {"dataset": "smap", "channels": ["A-1"], "root": str(DATA)},
            "model": {"kind": "dense_ae", "window": 30, "train_stride": 4},
            "fit": {"epochs": 2, "device": "cpu"},
            "search": {"model": {"hidden": {"choices": [[16, 4], [16, 8]]}}},
        }
    )
    result = run_study(config, Settings(), tmp_path / "out", progress=False)
    with result.trials_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"}
    values = [float(r["val_loss"]) for r in rows]
    assert result.best_value == pytest.approx(min(values), rel=1e-5)
    best = json.loads(result.best_json.read_text())
    chosen = json.loads(result.best_params["model.hidden"])  # lists travel as JSON text
    assert best["recipe"]["hyperparameters"]["hidden"] == chosen in ([16, 4], [16, 8])
    assert best["channels"] == ["A-1"] and best["objective"] == "val_loss"
    assert result.plot is not None and result.plot.stat().st_size > 1000


@needs_data
def test_a_labelled_study_searches_the_threshold(tmp_path: Path, one_thread) -> None:
    """The composite F1 of the best trial is what `evaluate` reports for that configuration."""
    config = TuneConfig.model_validate(
        {
            "study": {"objective": "composite_f1", "trials": 2, "prune": False, "seed": 3},
            "data": {"dataset": "smap", "channels": ["A-1"], "root": str(DATA)},
            "model": {"kind": "dense_ae", "window": 30, "train_stride": 4},
            "fit": {"epochs": 2, "device": "cpu"},
            "search": {"threshold": {"params.margin": {"choices": [0.02, 0.5]}}},
        }
    )
    result = run_study(config, RECENT_MAX, tmp_path / "out", progress=False)
    from stream_detector.evaluation.metrics import summarise
    from stream_detector.evaluation.runner import ModelRecipe, evaluate
    from stream_detector.models.base import FitConfig

    best = result.best_config
    settings = RECENT_MAX.model_copy(
        update={
            "threshold": RECENT_MAX.threshold.model_copy(
                update={"params": best["threshold"]["params"]}
            )
        }
    )
    recipe = ModelRecipe(
        kind="dense_ae",
        window=30,
        hyperparameters=best["recipe"]["hyperparameters"],
        fit=FitConfig(**best["recipe"]["fit"]),
        train_stride=4,
    )
    report = evaluate(DATA, "smap", recipe, settings, channels=["A-1"], progress=False)
    again = summarise([o.counts for o in report.outcomes]).composite_f1
    assert result.best_value == pytest.approx(again)


def test_the_cli_refuses_a_bad_file_with_its_reason(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[study]\ntrials = -1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SD_")}
    done = subprocess.run(
        [sys.executable, "-m", "stream_detector.cli", "tune", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "study.trials" in done.stderr and "Traceback" not in done.stderr


@needs_data
def test_a_label_free_study_searches_the_threshold_on_injected_anomalies(
    tmp_path: Path, one_thread
) -> None:
    """injected_f1 reads no label: its value is the F1 on the held-out part's injections."""
    from stream_detector.evaluation.runner import ModelRecipe, train_channel
    from stream_detector.evaluation.threshold_grid import held_out_injection, judge_injected
    from stream_detector.models.base import FitConfig
    from stream_detector.serving import ServedModel

    config = TuneConfig.model_validate(
        {
            "study": {"objective": "injected_f1", "trials": 2, "prune": False, "seed": 1},
            "data": {"dataset": "smap", "channels": ["D-11"], "root": str(DATA)},
            "model": {"kind": "dense_ae", "window": 30, "train_stride": 4},
            "fit": {"epochs": 2, "device": "cpu"},
            "search": {"threshold": {"params.margin": {"choices": [0.02, 5.0]}}},
        }
    )
    result = run_study(config, RECENT_MAX, tmp_path / "out", progress=False)
    best = result.best_config
    recipe = ModelRecipe(
        "dense_ae", 30, best["recipe"]["hyperparameters"], FitConfig(**best["recipe"]["fit"]), 4
    )
    checkpoint = train_channel(DATA, "D-11", recipe)
    settings = RECENT_MAX.model_copy(
        update={
            "threshold": RECENT_MAX.threshold.model_copy(
                update={"params": best["threshold"]["params"]}
            )
        }
    )
    from stream_detector.data.smap_msl import load_series

    injected = held_out_injection(load_series(DATA, "D-11", "train"), "D-11", 30)
    counts = judge_injected(settings, ServedModel(checkpoint), "D-11", injected)
    from stream_detector.evaluation.metrics import summarise

    assert result.best_value == pytest.approx(summarise([counts]).f1)
    assert len(injected.sequences) >= 1
