"""Every experiment YAML in nni_configs/ is valid for NNI 3.0 and every configuration it can start is valid for the trial.

Checks without starting anything: NNI's own config classes load and canonicalise each YAML; the tuner and assessor are
built (or their class args validated) the way NNI's dispatcher would; 50 draws from the search space, with the trial
command's flags applied, resolve to a TrialConfig; the optimize modes are `maximize`.

The Kubernetes examples in nni_configs/kubernetes/ (never run here: no cluster) are checked the same way without
starting anything: NNI's classes validate them, what its manager's code takes for granted (the operator API versions it
knows, where it mounts the storage in pods) is checked against the installed nni_node, and the trial command runs our
entry point on data under that mount.
"""
from __future__ import annotations

import importlib
import math
import random
import shlex
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from nni.experiment.config import ExperimentConfig

from trial import REPO
from trial.adapter import cli_overrides, parse_args
from trial.config import TrialConfig, load_params_file, resolve
from trial.search_space import load_space, sample

CONFIGS = sorted((REPO / "nni_configs").glob("*.yml"))
NAMES = [p.name for p in CONFIGS]
DRAWS = 50
K8S_CONFIGS = sorted((REPO / "nni_configs" / "kubernetes").glob("*.yml"))
K8S_NAMES = [p.name for p in K8S_CONFIGS]
MAXIMIZERS = {"tpe", "hyperband", "medianstop", "evolution", "bohb"}   # algorithms whose optimize_mode matters


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def canonical(path: Path) -> dict:
    """The canonical form NNI sends to its manager (relative paths resolved against the YAML's folder)."""
    config = ExperimentConfig.load(path)
    config.validate()
    return config.json()


def trial_args(command: str):
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "trial"], f"trialCommand must run `python -m trial`, got {command!r}"
    return parse_args(argv[3:])


def algorithm_name(algo: dict) -> str:
    return (algo.get("name") or algo["className"].rsplit(".", 1)[-1]).lower().replace("fixed", "")


def is_hyperband(config: dict) -> bool:
    return algorithm_name(config["tuner"]) == "hyperband"


def test_there_are_configs_for_every_dataset_and_study():
    expected = {f"{ds}{suffix}.yml" for ds in ("mnist", "fmnist", "cifar10") for suffix in ("", "_baseline")}
    expected |= {"mnist_hyperband.yml", "mnist_random.yml", "mnist_grid.yml", "fmnist_hyperband.yml"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_config_validates_with_nni(path):
    config = canonical(path)
    assert config["trainingService"]["platform"] == "local"
    assert Path(config["trialCodeDirectory"]) == REPO
    assert Path(config["searchSpaceFile"]).is_file()
    assert config["trialConcurrency"] == 2
    assert config["maxTrialNumber"] > 0 and config["maxExperimentDuration"]
    # advisor: is deprecated in NNI 3.0; Hyperband is a customized tuner
    assert "advisor" not in raw(path) and config.get("advisor") is None


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_header_says_what_runs_and_how(path):
    text = path.read_text()
    assert text.startswith("# ")
    assert f"nnictl create --config nni_configs/{path.name}" in text


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_gpu_is_not_pinned(path):
    # trialGpuNumber: 0 makes NNI 3.0 hide every GPU from local trials; unset lets device "auto" find CUDA. The one
    # config made for a GPU box (*_gpu.yml) asks for one GPU per trial, shared by at least two trials
    config = raw(path)
    if path.stem.endswith("_gpu"):
        assert config["trialGpuNumber"] == 1
        assert config["trainingService"]["maxTrialNumberPerGpu"] >= 2
        return
    assert "trialGpuNumber" not in config
    assert "trialGpuNumber" not in config["trainingService"]
    assert "CUDA_VISIBLE_DEVICES" in path.read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_optimize_mode_is_maximize(path):
    config = raw(path)
    for role in ("tuner", "assessor"):
        algo = config.get(role)
        if algo is None:
            continue
        mode = (algo.get("classArgs") or {}).get("optimize_mode")
        if algorithm_name(algo) in MAXIMIZERS:
            assert mode == "maximize", f"{role} {algorithm_name(algo)} must set optimize_mode: maximize"
        else:
            assert mode in (None, "maximize")


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_trial_command_parses(path):
    config = raw(path)
    args = trial_args(config["trialCommand"])
    dataset = path.stem.split("_")[0]
    assert args.cfg_dataset == dataset
    if args.params:
        assert (REPO / args.params).is_file(), "--params is relative to trialCodeDirectory (the repo root)"
    if is_hyperband(config):
        # the budget arrives as TRIAL_BUDGET (= epochs); a flag would outrank it, early stopping would cut it
        assert args.cfg_epochs is None and args.cfg_patience is None
    else:
        assert args.cfg_epochs is not None, "non-Hyperband configs fix the epochs on the command line"


def _budgets(class_args: dict) -> list[int]:
    """Every budget NNI's Hyperband hands out for these class args: floor(R * eta**-s * eta**i)."""
    R, eta = class_args.get("R", 60), class_args.get("eta", 3)
    s_max = math.floor(math.log(R, eta) + 1e-6)
    return sorted({math.floor(R / eta ** s * eta ** i + 1e-6) for s in range(s_max + 1) for i in range(s + 1)})


def _draws(config: dict, space: dict) -> list[dict]:
    draws = [sample(space, random.Random(seed)) for seed in range(DRAWS)]
    if is_hyperband(config):
        budgets = _budgets(config["tuner"]["classArgs"])
        draws = [{**d, "TRIAL_BUDGET": budgets[i % len(budgets)]} for i, d in enumerate(draws)]
    return draws


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_every_draw_resolves_with_the_trial_command(path):
    config = canonical(path)
    space = load_space(config["searchSpaceFile"])
    args = trial_args(config["trialCommand"])
    file_params = load_params_file(str(REPO / args.params)) if args.params else {}
    cli = cli_overrides(args)
    for draw in _draws(config, space):
        cfg = resolve(file_params, draw, cli)
        assert isinstance(cfg, TrialConfig)
        assert cfg.dataset == path.stem.split("_")[0]
        if "TRIAL_BUDGET" in draw:
            assert cfg.epochs == draw["TRIAL_BUDGET"]


def load_custom(algo: dict):
    """A customized algorithm's class, imported the way NNI's create_customized_class_instance does."""
    module_name, class_name = algo["className"].rsplit(".", 1)
    sys.path.insert(0, algo["codeDirectory"])
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(algo["codeDirectory"])
    return getattr(module, class_name)


@pytest.mark.parametrize("path", CONFIGS, ids=NAMES)
def test_nni_builds_the_algorithms(path):
    """What the dispatcher does at start (a tuner that fails there leaves the experiment RUNNING with no trials):
    tuners are created, given the search space, and their first suggestions resolve."""
    from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
    from nni.tools.package_utils.tuner_factory import create_builtin_class_instance, create_validator_instance

    config = canonical(path)
    space = load_space(config["searchSpaceFile"])
    args = trial_args(config["trialCommand"])
    file_params = load_params_file(str(REPO / args.params)) if args.params else {}
    tuner = config["tuner"]
    class_args = tuner.get("classArgs") or {}
    if "name" in tuner:
        validator = create_validator_instance("tuners", tuner["name"])
        if validator:
            validator.validate_class_args(**class_args)
        algo = create_builtin_class_instance(tuner["name"], class_args, "tuners")
    else:
        cls = load_custom(tuner)
        if issubclass(cls, MsgDispatcherBase):   # an advisor opens NNI's websocket when built: checked below
            assert algorithm_name(tuner) == "hyperband"
            return
        algo = cls(**class_args)
    algo.update_search_space(space)
    for i in range(5):
        try:
            params = algo.generate_parameters(i)
        except Exception as err:   # GridSearch: nni.NoMoreTrialError once the grid is used up
            if type(err).__name__ == "NoMoreTrialError":
                break
            raise
        resolve(file_params, params, cli_overrides(args))
    if config.get("assessor"):
        assessor = config["assessor"]
        create_builtin_class_instance(assessor["name"], assessor.get("classArgs"), "assessors")


def test_hyperband_config_loads_the_fixed_advisor():
    """The customized-tuner form that NNI 3.0 accepts: codeDirectory + className (module.Class) + classArgs."""
    from nni.algorithms.hpo.hyperband_advisor import Hyperband, HyperbandClassArgsValidator

    config = canonical(REPO / "nni_configs" / "mnist_hyperband.yml")
    tuner = config["tuner"]
    assert Path(tuner["codeDirectory"]) == REPO / "experiments" / "tuners"
    assert issubclass(load_custom(tuner), Hyperband)
    HyperbandClassArgsValidator().validate_class_args(**tuner["classArgs"])
    assert tuner["classArgs"]["optimize_mode"] == "maximize"
    assert _budgets(tuner["classArgs"]) == [1, 3, 9]


@pytest.mark.parametrize("name", ["mnist.yml", "fmnist.yml", "cifar10.yml"])
def test_tpe_configs_use_the_fixed_tpe(name):
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    tuner = canonical(REPO / "nni_configs" / name)["tuner"]
    cls = load_custom(tuner)
    assert issubclass(cls, TpeTuner) and cls is not TpeTuner
    assert cls(**tuner["classArgs"]).optimize_mode.value == "maximize"


SMALL_SPACE = {"filters": {"_type": "choice", "_value": [8, 16]},
               "learning_rate": {"_type": "loguniform", "_value": [1e-4, 1e-2]}}


def test_fixed_tpe_accepts_a_result_after_a_mispaired_trial_end():
    """The order NNI 3.0 produces: parameters 0 and 1 run, the trial that ran 1 ends first but NNI names its end
    with id 0, then the trial that ran 0 reports. The built-in TPE raises KeyError (and its dispatcher dies)."""
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    from experiments.tuners.fixed_tpe import FixedTPE

    def replay(tuner):
        tuner.update_search_space(SMALL_SPACE)
        p0, p1 = tuner.generate_parameters(0), tuner.generate_parameters(1)
        tuner.receive_trial_result(1, p1, {"default": 0.7})
        tuner.trial_end(0, True)                 # NNI's record of the trial that ran id 1
        tuner.receive_trial_result(0, p0, {"default": 0.5})
        tuner.trial_end(1, True)
        return tuner

    with pytest.raises(KeyError):
        replay(TpeTuner(optimize_mode="maximize", seed=0))
    tuner = replay(FixedTPE(optimize_mode="maximize", seed=0))
    assert not tuner._running_params
    history = list(tuner._history.values())     # one list of (value, loss) records per search-space key
    assert len(history) == 2 and all(sorted(r.loss for r in h) == [-0.7, -0.5] for h in history)  # both learnt


def _nni_database(experiment: Path, parameter_sets: list[dict]) -> None:
    """A TrialJobEvent table as NNI 3.0 writes it (core/sqlDatabase.js), one RUNNING record per parameter set."""
    import json
    import sqlite3

    (experiment / "db").mkdir(parents=True)
    (experiment / "checkpoint").mkdir()
    with sqlite3.connect(experiment / "db" / "nni.sqlite") as conn:
        conn.execute("create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                     "logPath text, sequenceId integer, message text)")
        for i, params in enumerate(parameter_sets):
            record = {"parameter_id": i, "parameter_source": "algorithm", "parameters": params, "parameter_index": 0}
            conn.execute("insert into TrialJobEvent values (?, ?, 'RUNNING', ?, null, ?, null)",
                         (i, f"T{i}", json.dumps(record), i))
            conn.execute("insert into TrialJobEvent values (?, ?, 'SUCCEEDED', '', null, ?, null)", (i, f"T{i}", i))


def test_resumable_random_goes_on_after_a_resume_where_nni_random_draws_the_same_sets_again(tmp_path, monkeypatch):
    """A seeded search, stopped after three submitted trials and resumed: NNI's Random draws the first set again;
    ResumableRandom reads the three from NNI's database and draws the fourth and fifth, as one run without the
    stop would."""
    from nni.algorithms.hpo.random_tuner import RandomTuner

    from experiments.tuners.resumable_random import ResumableRandom, parameters_key

    space = load_space(REPO / "search_spaces" / "mnist_random.json")

    def tuner(cls):
        t = cls(seed=0)
        t.update_search_space(space)
        return t

    one_run = tuner(ResumableRandom)
    draws = [one_run.generate_parameters(i) for i in range(5)]
    assert len({parameters_key(p) for p in draws}) == 5
    _nni_database(tmp_path / "exp", draws[:3])
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "exp" / "checkpoint"))

    assert parameters_key(tuner(RandomTuner).generate_parameters(3)) == parameters_key(draws[0])
    resumed = tuner(ResumableRandom)
    resumed.load_checkpoint()
    assert [parameters_key(resumed.generate_parameters(i)) for i in (3, 4)] == [parameters_key(p) for p in draws[3:]]
    # a result NNI passes later (import_data, e.g. the re-run trial's) counts too
    again = tuner(ResumableRandom)
    again.import_data([{"parameter": draws[0], "value": 0.5}])
    assert parameters_key(again.generate_parameters(0)) == parameters_key(draws[1])


def test_resumable_random_says_when_a_small_space_is_exhausted():
    import nni

    from experiments.tuners.resumable_random import ResumableRandom

    t = ResumableRandom(seed=0)
    t.update_search_space({"filters": {"_type": "choice", "_value": [8, 16]}})
    assert sorted(t.generate_parameters(i)["filters"] for i in range(2)) == [8, 16]
    with pytest.raises(nni.NoMoreTrialError):
        t.generate_parameters(2)


def test_fixed_hyperband_compares_string_ids():
    """The fix itself, on the methods NNI calls (no dispatcher needed)."""
    from experiments.tuners.fixed_hyperband import FixedHyperband, serial_number

    assert serial_number("0-1_0_5") == 5 and serial_number(7) == 7 and serial_number("-1_0_0") == 0
    assert serial_number(None) is None and serial_number("custom") is None
    hb = FixedHyperband.__new__(FixedHyperband)          # skip __init__: it connects to NNI's websocket
    hb.recovered_max_param_id, hb.recovered_trial_params = -1, {}
    assert not hb.is_created_in_previous_exp("0-1_0_0")  # the built-in raises TypeError here
    assert not hb.is_created_in_previous_exp(None)
    # a resumed experiment: ids up to serial 4 were made before
    assert hb.recover_parameter_id([{"parameter_id": "0-2_0_3", "parameters": {}},
                                    {"parameter_id": "0-2_1_4", "parameters": {}}]) == 4
    assert hb.is_created_in_previous_exp("0-2_1_4") and not hb.is_created_in_previous_exp("1-2_0_5")


def test_fixed_hyperband_counts_a_trial_end_under_the_id_the_trial_ran(monkeypatch):
    """NNI names the end of the trial that ran '0-1_0_0' with '0-0_0_3' (its record of another trial): the fixed
    advisor counts it in bracket 0-1, where the trial's own metrics put it."""
    import nni
    from nni.runtime import msg_dispatcher_base

    from experiments.tuners.fixed_hyperband import FixedHyperband

    monkeypatch.setattr(msg_dispatcher_base, "dispatcher_env_vars",   # no websocket: NNI's unit-test address
                        msg_dispatcher_base.dispatcher_env_vars._replace(NNI_TUNER_COMMAND_CHANNEL="ws://_unittest_"))
    hb = FixedHyperband(optimize_mode="maximize", R=3, eta=3)
    hb.handle_update_search_space(SMALL_SPACE)
    ids = [hb._get_one_trial_job()["parameter_id"] for _ in range(5)]
    assert [i.split("_", 1)[0] for i in ids] == ["0-1", "0-1", "0-1", "0-0", "0-0"]
    ran, recorded = ids[0], ids[3]
    hb.handle_report_metric_data({"parameter_id": ran, "trial_job_id": "A", "type": "FINAL", "sequence": 0,
                                  "value": nni.dump({"default": 0.9})})
    hb.handle_trial_end({"trial_job_id": "A", "event": "SUCCEEDED",
                         "hyper_params": nni.dump({"parameter_id": recorded, "parameters": {}})})
    assert hb.brackets["0-1"].num_finished_configs[0] == 1
    assert hb.brackets["0-0"].num_finished_configs[0] == 0


# ------------------------------------------------------------------------------------------ Kubernetes examples
def nni_node_source(relative: str) -> str:
    """A file of NNI's manager (the Node.js side nnictl starts), as installed."""
    import nni_node
    return (Path(nni_node.__file__).parent / relative).read_text()


def k8s_roles(ts: dict) -> list[dict]:
    if ts["platform"] == "kubeflow":
        return [ts[role] for role in ("worker", "ps", "master") if ts.get(role)]
    return ts["taskRoles"]


def test_there_are_kubernetes_examples():
    assert {"fmnist_kubeflow.yml", "fmnist_frameworkcontroller.yml"} <= set(K8S_NAMES)


@pytest.mark.parametrize("path", K8S_CONFIGS, ids=K8S_NAMES)
def test_kubernetes_example_validates_with_nni(path):
    config = canonical(path)
    ts = config["trainingService"]
    assert ts["platform"] in ("kubeflow", "frameworkcontroller")
    # NNI 3.0 hands a v2 config only to its reusable Kubernetes service; reuseMode false gets the legacy one, which
    # never receives its cluster settings (RouterTrainingService.setClusterMetadata does nothing)
    assert raw(path)["trainingService"]["reuseMode"] is True
    assert Path(config["trialCodeDirectory"]) == REPO, "the code NNI uploads to the storage is the repository"
    assert Path(config["searchSpaceFile"]).is_file()
    assert Path(config["tuner"]["codeDirectory"]) == REPO / "experiments" / "tuners"
    assert config["nniManagerIp"], "pods must be told where the manager is"
    assert "trialGpuNumber" not in raw(path)    # GPUs come from the pod's resources, as in the local configs
    assert ts["storage"]["storageType"] in ("nfs", "azureStorage")
    roles = k8s_roles(ts)
    assert sum(r.get("replicas", r.get("taskNumber", 0)) for r in roles) == 1, "one process per trial"
    assert all(r["gpuNumber"] == 1 and r["cpuNumber"] >= 1 and r["dockerImage"] for r in roles)
    if ts["platform"] == "kubeflow":     # the operator API versions NNI's manager has a client for
        assert f"case '{ts['apiVersion']}'" in nni_node_source("training_service/kubernetes/kubeflow/"
                                                                 "kubeflowApiClient.js")
    text = path.read_text()
    assert text.startswith("# ") and f"nnictl create --config nni_configs/kubernetes/{path.name}" in text


@pytest.mark.parametrize("path", K8S_CONFIGS, ids=K8S_NAMES)
def test_kubernetes_trial_command_runs_our_entry_point_on_the_shared_storage(path):
    config = canonical(path)
    argv = shlex.split(config["trialCommand"])
    # python3: the interpreter NNI's start script and trial runner use in the image
    assert argv[:3] == ["python3", "-m", "trial"], config["trialCommand"]
    args = parse_args(argv[3:])
    dataset = path.stem.split("_")[0]
    assert args.cfg_dataset == dataset and args.cfg_epochs is not None
    # where NNI 3.0 mounts its NFS export or Azure share in every pod
    mount = "/tmp/mount"
    assert f"this.CONTAINER_MOUNT_PATH = '{mount}'" in nni_node_source(
        "training_service/reusable/environments/kubernetes/kubernetesEnvironmentService.js")
    assert args.data_dir and PurePosixPath(args.data_dir).is_relative_to(mount)
    assert all(r["command"] == config["trialCommand"] for r in k8s_roles(config["trainingService"]))
    # the same search as the local config of the dataset, every draw valid for the trial
    local = canonical(REPO / "nni_configs" / f"{dataset}.yml")
    assert config["searchSpaceFile"] == local["searchSpaceFile"]
    assert config["tuner"] == local["tuner"] and config["assessor"]["name"] == local["assessor"]["name"]
    for draw in _draws(config, load_space(config["searchSpaceFile"])):
        assert resolve({}, draw, cli_overrides(args)).dataset == dataset
