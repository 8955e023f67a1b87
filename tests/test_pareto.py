"""Multi-objective search without NNI's manager: the Pareto front and hypervolume on hand-made points, the report's
answers (smallest / fastest within X points, the points retrained), the ParetoTuner's ask/tell on every shipped
search space (NNI's Tuner API called as the dispatcher calls it), the pre-flight check of its objectives, and the
study comparing two searches. The tuner in a real NNI experiment, and the report's section on it, are in
tests/test_pareto_experiment.py.

    .venv/bin/pytest tests/test_pareto.py -q
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from experiments.launch.check import check
from experiments.results import pareto
from experiments.studies import pareto_vs_tpe
from experiments.tuners import TUNERS_DIR
from experiments.tuners.pareto import ParetoTuner, decode_metric, objective_directions
from tests.nni_helpers import config_from, write_config
from trial import REPO
from trial.config import TrialConfig, resolve
from trial.search_space import load_space

SPACES = sorted((REPO / "search_spaces").glob("*.json"))
MAXMIN = ("maximize", "minimize")


# ------------------------------------------------------------------------------------------ the front, by hand
def test_dominated_points_are_out_and_ties_kept():
    # (accuracy, latency): b dominates c (more accurate, as fast); d and e are the same point: both kept
    points = [(0.90, 5.0), (0.80, 2.0), (0.79, 2.0), (0.85, 3.0), (0.85, 3.0), (0.70, 9.0)]
    assert pareto.front_mask(points, MAXMIN).tolist() == [True, True, False, True, True, False]


def test_both_directions_and_a_nan():
    points = [(1.0, 1.0), (2.0, 2.0), (3.0, 0.5), (float("nan"), 0.1)]
    assert pareto.front_mask(points, ("minimize", "minimize")).tolist() == [True, False, True, False]
    assert pareto.front_mask(points, ("maximize", "maximize")).tolist() == [False, True, True, False]
    assert pareto.front_mask(points, ("maximize", "minimize")).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="do not fit"):
        pareto.front_mask(points, ("maximize",))


def test_hypervolume_against_a_hand_computed_area():
    # minimise both: (1,3), (2,2), (3,1) against (4,4): columns of 1 x 1, 1 x 2, 1 x 3 = 6
    assert pareto.hypervolume_2d([(1, 3), (2, 2), (3, 1)], ("minimize", "minimize"), (4, 4)) == pytest.approx(6.0)
    # accuracy (max) against latency (min), reference (0.5, 10): (0.9, 2) and (0.8, 1) and a dominated (0.7, 3):
    # [2,10] x [0.5,0.9] = 3.2, plus [1,2] x [0.5,0.8] = 0.3
    pts = [(0.9, 2.0), (0.8, 1.0), (0.7, 3.0)]
    assert pareto.hypervolume_2d(pts, MAXMIN, (0.5, 10.0)) == pytest.approx(3.5)
    # a duplicate adds nothing; a point beyond the reference adds nothing; none at all is 0
    assert pareto.hypervolume_2d(pts + [(0.9, 2.0), (0.4, 0.5)], MAXMIN, (0.5, 10.0)) == pytest.approx(3.5)
    assert pareto.hypervolume_2d([(0.4, 0.5)], MAXMIN, (0.5, 10.0)) == 0.0


def test_hypervolume_agrees_with_optunas_on_random_fronts():
    from optuna._hypervolume import compute_hypervolume  # private, version-pinned: a cross-check only
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.uniform(0, 1, (15, 2))
        ref = np.array([1.1, 1.1])
        expected = compute_hypervolume(pts[pareto.front_mask(pts, ("minimize", "minimize"))], ref)
        assert pareto.hypervolume_2d(pts, ("minimize", "minimize"), ref) == pytest.approx(expected)


def table(rows) -> pd.DataFrame:
    """A trial table as experiments.results.export makes it: (id, status, val accuracy, latency ms, params)."""
    return pd.DataFrame([{"trial_id": t, "status": s, "final_default": a, "final_latency_ms": lat, "final_params": p,
                          "trial_dir": None} for t, s, a, lat, p in rows])


TRIALS = table([("a", "SUCCEEDED", 0.910, 4.0, 90_000), ("b", "SUCCEEDED", 0.905, 1.5, 20_000),
                ("c", "SUCCEEDED", 0.880, 1.0, 8_000), ("d", "SUCCEEDED", 0.870, 2.0, 50_000),
                ("e", "SUCCEEDED", 0.0, 0.2, 500_000),       # refused by a constraint: no model
                ("f", "FAILED", None, None, None), ("g", "EARLY_STOPPED", 0.5, 0.1, 100)])


def test_fronts_leave_refused_and_unfinished_trials_out():
    result = pareto.summarise(TRIALS, points=1.0)
    assert result["n_candidates"] == 4 and result["n_refused"] == 1
    assert [t["trial_id"] for t in result["fronts"]["latency"]["trials"]] == ["c", "b", "a"]
    assert [t["trial_id"] for t in result["fronts"]["size"]["trials"]] == ["c", "b", "a"]
    assert result["fronts"]["size"]["column"] == "final_params"   # no model_bytes reported: parameters
    with_bytes = TRIALS.assign(final_model_bytes=TRIALS["final_params"] * 4)
    assert pareto.summarise(with_bytes)["fronts"]["size"]["column"] == "final_model_bytes"
    assert "latency" not in pareto.summarise(TRIALS.drop(columns="final_latency_ms"))["fronts"]


def test_a_diverged_trial_is_off_the_front_and_not_called_refused():
    # diverged trials report accuracy 0.0 with final_diverged (1 in an exported CSV, True in a fresh table)
    trials = TRIALS.assign(final_diverged=0)
    trials = pd.concat([trials, table([("n", "SUCCEEDED", 0.0, 0.05, 10)]).assign(final_diverged=1),
                        table([("m", "SUCCEEDED", 0.0, 0.05, 10)]).assign(final_diverged=True)])
    done, refused = pareto.candidates(trials)
    assert "n" not in set(done["trial_id"]) and "m" not in set(done["trial_id"]) and refused == 1   # e only
    assert pareto.diverged(trials) == 2 and pareto.diverged(TRIALS) == 0
    result = pareto.summarise(trials)
    assert result["n_refused"] == 1 and result["n_diverged"] == 2
    assert [t["trial_id"] for t in result["fronts"]["latency"]["trials"]] == ["c", "b", "a"]


def test_the_smallest_and_fastest_within_x_points():
    done, _ = pareto.candidates(TRIALS)
    answer = pareto.within(done, "final_latency_ms", 1.0)
    assert answer["best"]["trial_id"] == "a" and answer["chosen"]["trial_id"] == "b"   # c is 3 points below
    line = pareto.within_line(answer)
    assert line.startswith("The fastest model within 1 point of the best validation accuracy (0.9100, trial a")
    assert "trial b, 0.9050 validation accuracy" in line and "(2.7x faster)" in line
    assert pareto.within(done, "final_params", 5.0)["chosen"]["trial_id"] == "c"
    assert "that trial itself" in pareto.within_line(pareto.within(done, "final_params", 0.1))


def test_spread_picks_both_ends_of_the_front():
    front = pareto.front(pareto.candidates(TRIALS)[0], "final_latency_ms")
    assert list(pareto.spread(front, 2)["trial_id"]) == ["a", "c"]
    assert list(pareto.spread(front, 3)["trial_id"]) == ["a", "b", "c"]
    assert list(pareto.spread(front, 9)["trial_id"]) == ["a", "b", "c"] and pareto.spread(front, 0).empty


def test_mean_ci_is_students_t():
    mean, low, high = pareto.mean_ci([0.90, 0.91, 0.92])
    assert mean == pytest.approx(0.91) and (high - mean) == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert math.isnan(pareto.mean_ci([0.9])[1])


def test_the_study_compares_two_searches_against_one_reference(tmp_path, capsys):
    other = table([("x", "SUCCEEDED", 0.912, 5.0, 100_000), ("y", "SUCCEEDED", 0.860, 3.0, 30_000)])
    result = pareto_vs_tpe.compare({"pareto": TRIALS, "tpe": other}, budget=2.0, reference=(0.85, 6.0))
    p, t = result["searches"]["pareto"], result["searches"]["tpe"]
    # pareto: c (0.88, 1) + b (0.905, 1.5) + a (0.91, 4) against (0.85, 6): 5*0.03 + 4.5*0.025 + 2*0.005
    assert p["hypervolume"] == pytest.approx(0.15 + 0.1125 + 0.01)
    assert t["hypervolume"] == pytest.approx(3.0 * 0.010 + 1.0 * 0.052)   # bands 0.85-0.86 and 0.86-0.912
    assert p["best_under_budget"]["trial_id"] == "b" and t["best_under_budget"] is None
    # defaults: the worst of all points on each axis, the median latency; both stated
    auto = pareto_vs_tpe.compare({"pareto": TRIALS, "tpe": other})
    assert auto["reference"] == {"val_accuracy": 0.86, "final_latency_ms": 5.0}
    assert auto["budget"]["final_latency_ms"] == 2.5   # the median of 1, 1.5, 2, 3, 4, 5
    # from CSVs, as experiments.results.export writes them, to a table and JSON
    TRIALS.to_csv(tmp_path / "a.csv", index=False)
    other.to_csv(tmp_path / "b.csv", index=False)
    assert pareto_vs_tpe.main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--budget-ms", "2",
                               "--reference", "0.85", "6", "--out", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "| pareto | 4 | 1 | 3 | 0.2725 | 0.9100 | b, 0.9050, 1.5 |" in text and "| tpe | 2 | 0 |" in text
    assert json.loads((tmp_path / "out.json").read_text())["searches"]["pareto"]["hypervolume"] == \
        pytest.approx(0.2725)
    assert pareto_vs_tpe.main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), "--objective", "final_macs",
                               "--out", str(tmp_path / "o.json")]) == 2
    assert "no finished trial reports macs" in capsys.readouterr().err


def test_the_study_over_seeds_pairs_each_search_with_tpe_against_one_reference(tmp_path, capsys):
    other = table([("x", "SUCCEEDED", 0.912, 5.0, 100_000), ("y", "SUCCEEDED", 0.860, 3.0, 30_000)])
    worse = table([("p", "SUCCEEDED", 0.890, 2.0, 1), ("q", "SUCCEEDED", 0.860, 5.0, 1)])
    runs = pd.concat([TRIALS.assign(search="nsga2", seed=0, minutes=4.0), other.assign(search="tpe", seed=0, minutes=5.0),
                      worse.assign(search="nsga2", seed=1, minutes=3.0), other.assign(search="tpe", seed=1, minutes=6.0)])
    s = pareto_vs_tpe.summarise_runs(runs, budget=2.0, reference=(0.85, 6.0))
    hv = {(r["search"], r["seed"]): r["hypervolume"] for r in s["runs"]}
    assert hv["nsga2", 0] == pytest.approx(0.2725) and hv["tpe", 0] == pytest.approx(0.082)
    assert hv["nsga2", 1] == pytest.approx(4.0 * 0.04)    # p (0.89, 2) dominates q (0.86, 5)
    assert list(s["searches"]) == ["nsga2", "tpe"] and s["searches"]["nsga2"]["seeds"] == [0, 1]
    mean, low, high = s["searches"]["nsga2"]["hypervolume_mean_ci"]
    assert mean == pytest.approx((0.2725 + 0.16) / 2) and low < mean < high
    d = s["paired"]["nsga2 - tpe"]
    assert d["hypervolume"] == pytest.approx([0.2725 - 0.082, 0.16 - 0.082]) and d["hypervolume_wins"] == 2
    # best under 2 ms: b (0.905) and p (0.89) against tpe's none (counted as the reference accuracy, 0.85)
    assert d["best_under_budget"] == pytest.approx([0.055, 0.04])
    assert s["searches"]["tpe"]["minutes"] == [5.0, 6.0]
    # defaults: ONE reference and budget over every search and seed
    auto = pareto_vs_tpe.summarise_runs(runs)
    assert auto["reference"] == {"val_accuracy": 0.86, "final_latency_ms": 5.0}
    # the command: from a run's folder, keeping what the run said it ran
    (tmp_path / "trials.csv").write_text(runs.to_csv(index=False))
    (tmp_path / "summary.json").write_text(json.dumps({"run": {"trials": 4}}))
    assert pareto_vs_tpe.main(["summary", str(tmp_path), "--budget-ms", "2", "--reference", "0.85", "6"]) == 0
    text = capsys.readouterr().out
    assert "| nsga2 | 1 | 2 | 0 | 1 | 0.16 | 0.8900 | 0.8900 (p, 2) | 3.0 |" in text
    assert "nsga2 - tpe, paired over seeds 0, 1: hypervolume 0.134" in text and "larger in 2 of 2" in text
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["run"] == {"trials": 4} and written["paired"]["nsga2 - tpe"]["hypervolume_wins"] == 2
    assert (tmp_path / "fronts.png").read_bytes()[:4] == b"\x89PNG"
    assert pareto_vs_tpe.main(["summary", str(tmp_path / "nowhere")]) == 2
    assert "takes the --out folder of a `run`" in capsys.readouterr().err


def test_equal_time_cuts_each_seeds_searches_at_its_quickest_search():
    m = 60_000
    runs = pd.DataFrame({"search": ["nsga2"] * 3 + ["tpe"] * 3 + ["nsga2", "tpe"],
                         "seed": [0] * 6 + [1, 1], "trial_id": list("abcxyzpq"),
                         "start_ms": [10 * m, 11 * m, 12 * m, 20 * m, 21 * m, 22 * m, 0, 0],
                         "end_ms": [11 * m, 12 * m, 13 * m, 21 * m, 22.5 * m, 25 * m, 9 * m, 4 * m]})
    kept = pareto_vs_tpe.equal_time(runs)
    # seed 0: nsga2 took 3 minutes, tpe 5: tpe keeps x (1) and y (2.5), not z (5); seed 1: q took 4, p (9) is cut
    assert list(kept["trial_id"]) == ["a", "b", "c", "x", "y", "q"]
    assert list(kept.columns) == list(runs.columns)


def test_a_study_run_never_overwrites_one_and_resumes_only_what_it_lacks(tmp_path, capsys):
    other = table([("x", "SUCCEEDED", 0.912, 5.0, 100_000), ("y", "SUCCEEDED", 0.860, 3.0, 30_000)])
    runs = pd.concat([TRIALS.assign(search="nsga2", seed=0, minutes=4.0), other.assign(search="tpe", seed=0, minutes=5.0)])
    out = tmp_path / "study"
    out.mkdir()
    (out / "trials.csv").write_text(runs.to_csv(index=False))
    command = "python -m trial --dataset fmnist --epochs 1 --threads 1 --train_subset 5000"
    (out / "summary.json").write_text(json.dumps({"run": {"trial_command": command, "trials": 48, "concurrency": 2,
                                                          "population_size": 8, "seeds": [0]}}))
    before = (out / "trials.csv").read_text()
    argv = ["run", "--out", str(out), "--workdir", str(tmp_path / "nni"), "--seeds", "0", "--trials", "48"]
    assert pareto_vs_tpe.main(argv + ["--flags", "--train_subset 5000"]) == 2
    assert "holds a study already: add --resume" in capsys.readouterr().err
    assert pareto_vs_tpe.main(argv + ["--resume", "--flags", "--train_subset 9000"]) == 2
    assert "--train_subset 5000`, not" in capsys.readouterr().err.replace("'", "`")
    assert pareto_vs_tpe.main(argv[:-1] + ["12", "--resume", "--flags", "--train_subset 5000"]) == 2
    assert "trials 48, not 12" in capsys.readouterr().err
    assert (out / "trials.csv").read_text() == before     # nothing lost on any refusal
    # every search and seed asked for is there: nothing runs, the same study comes back
    summary = pareto_vs_tpe.run_study(out, tmp_path / "nni", [0], 48, 1, "--train_subset 5000", resume=True)
    assert (out / "trials.csv").read_text() == before and not (tmp_path / "nni").exists()
    assert summary["run"]["trial_command"] == command and summary["run"]["seeds"] == [0]
    assert summary["paired"]["nsga2 - tpe"]["seeds"] == [0]


# ------------------------------------------------------------------------------------------ the tuner, no NNI
@pytest.mark.parametrize("algorithm", ["nsga2", "motpe"])
@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_every_draw_of_every_shipped_space_resolves(path, algorithm):
    space = load_space(str(path))
    dataset = path.stem.split("_")[0] if path.stem.split("_")[0] in ("mnist", "fmnist", "cifar10") else "mnist"
    tuner = ParetoTuner(objectives=["default", "params"], algorithm=algorithm, population_size=4, seed=0)
    tuner.update_search_space(space)
    rng = random.Random(0)
    for i in range(12):
        params = tuner.generate_parameters(i)
        assert isinstance(resolve({"dataset": dataset}, params), TrialConfig)
        tuner.receive_trial_result(i, params, {"default": rng.random(), "params": rng.randint(1_000, 90_000)})
        tuner.trial_end(i, True)
    trials = tuner.study.get_trials()
    assert len(trials) == 12 and all(t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials)
    assert tuner.front()


NESTED = {"optimizer": {"_type": "choice", "_value": [
              {"_name": "sgd", "learning_rate": {"_type": "loguniform", "_value": [1e-3, 1e-1]},
               "momentum": {"_type": "quniform", "_value": [0.8, 0.95, 0.05]}},
              {"_name": "adam", "learning_rate": {"_type": "loguniform", "_value": [1e-4, 1e-2]}}]},
          "filters": {"_type": "randint", "_value": [8, 12]},
          "dropout": {"_type": "uniform", "_value": [0.0, 0.5]},
          "noise": {"_type": "qnormal", "_value": [1.0, 0.5, 0.1]}}


def test_nested_choices_become_conditional_parameters_named_by_path():
    tuner = ParetoTuner(objectives={"default": "maximize", "latency_ms": "minimize"}, seed=1)
    tuner.update_search_space(NESTED)
    seen = set()
    for i in range(30):
        p = tuner.generate_parameters(i)
        opt = p["optimizer"]
        seen.add(opt["_name"])
        low, high = (1e-3, 1e-1) if opt["_name"] == "sgd" else (1e-4, 1e-2)
        assert low <= opt["learning_rate"] <= high and 8 <= p["filters"] < 12 and 0 <= p["dropout"] <= 0.5
        assert set(opt) == ({"_name", "learning_rate", "momentum"} if opt["_name"] == "sgd" else
                            {"_name", "learning_rate"})
        if "momentum" in opt:
            assert round(opt["momentum"] / 0.05, 6).is_integer() and 0.8 <= opt["momentum"] <= 0.95
        assert round(p["noise"] / 0.1, 6).is_integer()
        names = set(tuner.study.trials[-1].params)
        assert f"optimizer[{opt['_name']}].learning_rate" in names
    assert seen == {"sgd", "adam"}


def test_results_json_encoded_failures_and_refusals():
    tuner = ParetoTuner(objectives=["default", "latency_ms"], seed=0, population_size=2)
    tuner.update_search_space(NESTED)
    p = [tuner.generate_parameters(i) for i in range(6)]
    # NNI can deliver the metric dict JSON-encoded, once or twice
    tuner.receive_trial_result(0, p[0], json.dumps(json.dumps({"default": 0.9, "latency_ms": 3.0, "params": 5})))
    tuner.receive_trial_result(1, p[1], json.dumps({"default": 0.8, "latency_ms": 1.0}))
    tuner.trial_end(2, False)                                          # failed, or stopped by an assessor
    tuner.receive_trial_result(3, p[3], {"default": 0.7})               # no latency: told as failed, not guessed
    tuner.receive_trial_result(4, p[4], {"default": 0.0, "latency_ms": 0.1})   # refused by a constraint
    tuner.trial_end(5, True)              # a success with no result yet (NNI may name another trial's end): waits
    states = [t.state.name for t in tuner.study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "COMPLETE", "RUNNING"]
    assert tuner.study.trials[0].values == [0.9, 3.0]
    # the refused trial is the fastest, but infeasible: ranked behind every trained one, never on the front
    assert tuner.study.trials[4].constraints == {"refused": 1.0}
    assert sorted(f["parameter_id"] for f in tuner.front()) == [0, 1]
    # NNI named a trial's failed end with id 5 (mis-paired), then 5's own result comes: it is kept, once
    tuner.trial_end(5, False)
    tuner.receive_trial_result(5, p[5], {"default": 0.95, "latency_ms": 0.5})
    tuner.receive_trial_result(5, p[5], {"default": 0.95, "latency_ms": 0.5})
    assert [f["parameter_id"] for f in tuner.front()] == [5]
    assert tuner.study.trials[-1].params == tuner.study.trials[5].params   # the same configuration, completed
    assert len(tuner.study.trials) == 7
    tuner.receive_trial_result(99, {}, {"default": 0.9, "latency_ms": 1.0})   # not ours: ignored
    assert len(tuner.study.trials) == 7


def test_import_data_adds_earlier_results(tmp_path):
    tuner = ParetoTuner(objectives=["default", "params"], seed=0, record=str(tmp_path / "record.json"))
    tuner.update_search_space(NESTED)
    earlier = ParetoTuner(objectives=["default", "params"], seed=3)
    earlier.update_search_space(NESTED)
    data = [{"parameter": earlier.generate_parameters(i), "value": {"default": 0.5 + i / 10, "params": 10 - i}}
            for i in range(3)]
    tuner.import_data(data + [{"parameter": {"optimizer": {"_name": "rmsprop"}}, "value": 0.3}])
    assert [t.values for t in tuner.study.trials] == [[0.5, 10], [0.6, 9], [0.7, 8]]
    record = json.loads((tmp_path / "record.json").read_text())
    assert len(record["trials"]) == 3 and record["front"] == [2] and record["objectives"] == {
        "default": "maximize", "params": "minimize"}
    tuner.generate_parameters(0)   # the imported trials share the asked ones' distributions
    assert len(tuner.study.trials) == 4


@pytest.mark.parametrize("objectives,words", [
    (["default"], "one objective"), (["default", "test_accuracy"], "unknown metric key 'test_accuracy'"),
    ({"default": "maximise", "params": "minimize"}, "direction 'maximise'"),
    (["default", "params", "default"], "given twice"), ("default", "must be a list")])
def test_objectives_are_refused_loudly(objectives, words):
    with pytest.raises(ValueError, match=words):
        objective_directions(objectives)
    with pytest.raises(ValueError, match="algorithm 'nsga3'"):
        ParetoTuner(algorithm="nsga3")


def test_decode_metric():
    assert decode_metric(0.5) == {"default": 0.5} and decode_metric('"0.5"') == {"default": 0.5}
    assert decode_metric(json.dumps(json.dumps({"default": 1}))) == {"default": 1}
    assert objective_directions(None) == {"default": "maximize", "latency_ms": "minimize"}


def test_the_study_uses_optunas_samplers():
    assert isinstance(ParetoTuner().study.sampler, optuna.samplers.NSGAIISampler)
    motpe = ParetoTuner(algorithm="motpe").study.sampler
    assert isinstance(motpe, optuna.samplers.TPESampler)


# ------------------------------------------------------------------------------------------ the pre-flight check
def _pareto_config(tmp_path: Path, **class_args) -> Path:
    config = config_from("fmnist_pareto.yml", tmp_path)
    config["tuner"]["classArgs"].update(class_args)
    return write_config(tmp_path / "exp.yml", config)


def test_the_preflight_check_reads_the_objectives(tmp_path, monkeypatch):
    import os
    import sys
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert Path(config_from("fmnist_pareto.yml", tmp_path)["tuner"]["codeDirectory"]) == TUNERS_DIR
    assert check(_pareto_config(tmp_path), draws=20).ok
    report = check(_pareto_config(tmp_path, objectives={"default": "minimize", "latency_ms": "minimize"}), draws=5)
    assert len(report.problems) == 1 and "minimizes `default`" in report.problems[0], report.problems
    report = check(_pareto_config(tmp_path, objectives={"params": "minimize", "latency_ms": "minimize"}), draws=5)
    assert len(report.problems) == 1 and "does not optimise `default`" in report.problems[0], report.problems
    report = check(_pareto_config(tmp_path, objectives=["default", "latency"]), draws=5)
    assert "unknown metric key 'latency'" in " ".join(report.problems)
