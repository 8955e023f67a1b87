"""The trial entry point, every NNI config's `trialCommand`, and the local debug mode: `python -m trial ...`.

Parameters merge as defaults < --params FILE < --arch FILE < NNI's sampled parameters (or --sample SPACE.json outside
NNI) < --smoke < command-line flags. Under NNI (NNI_PLATFORM set) it reports each epoch and the final metrics; outside
NNI it shows a progress bar and prints a summary, and never imports nni. Under nni.nas's multi-trial search
(experiments/nas/multitrial.py) the sampled parameters are the architecture the strategy chose, as
{"family": "nas", "nas_arch": ...}.

    python -m trial --dataset fmnist --smoke                          # one tiny epoch, end to end
    python -m trial --params baselines/deep_cnn.json --epochs 3       # a baseline, 3 epochs
    python -m trial --sample search_spaces/fmnist.json --sample-seed 7
    python -m trial --arch runs/nas/evolution-fmnist.json --epochs 10   # an architecture search's choice

`main(argv, run)` is the NNI path (parameters in, the trial's own record trial.json, metrics out) around `run`, which
trains by default; the load study's trial (experiments/studies/load_trial.py) passes one that trains nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .config import (
    FIELDS,
    SMOKE,
    ConfigError,
    TrialConfig,
    flatten_params,
    load_arch_file,
    load_params_file,
    params_digest,
    resolve,
)
from .cost import ConstraintError
from .data import INFO, DatasetError
from .files import OutputError, json_text, make_dir, write_file
from .nas_space import describe
from .resume import resume_path
from .search_space import SearchSpaceError, sample_file
from .train import Report, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trial", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", help="JSON/YAML file of parameters (a baseline)")
    p.add_argument("--arch", metavar="ARCH_JSON", help="an architecture to train (family nas): what "
                   "experiments.nas.multitrial/oneshot wrote, or a dict of labels -> choices")
    p.add_argument("--sample", metavar="SPACE_JSON", help="outside NNI: draw the parameters from this search space")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw")
    p.add_argument("--smoke", action="store_true", help=f"tiny run for CI: {SMOKE}")
    p.add_argument("--data-dir", help="data directory (default: $CNNSEARCH_DATA, then the usual places)")
    p.add_argument("--output-dir", help="where config, metrics and checkpoint go (default: $NNI_OUTPUT_DIR or runs/)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run of the same config with fewer epochs (on by default under Hyperband)")
    p.add_argument("--resume-dir", help="where resumable states live (default $CNNSEARCH_RESUME_DIR or the cache)")
    g = p.add_argument_group("config overrides (highest precedence); see trial/config.py")
    for name, f in FIELDS.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        g.add_argument(*flags, dest=f"cfg_{name}", default=None,
                       metavar="FILE" if f.default is None else type(f.default).__name__.upper())
    return p.parse_args(argv)


def cli_overrides(args: argparse.Namespace) -> dict:
    """The config keys given as flags (`--filters 64` -> {"filters": "64"}), as parse_args leaves them."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


class NNIReporter:
    """The three NNI calls, kept here so the rest of the harness never imports nni."""

    def __init__(self):
        import nni
        self.nni = nni
        # an nni.nas trial received its parameters (the model the strategy sampled) before this adapter runs, and
        # asking again would wait for a second set: read that one
        received = getattr(nni.trial, "_params", None)
        params = received["parameters"] if received else nni.get_next_parameter()
        sample = getattr(params, "sample", None)   # nni.nas's ExecutableModelSpace: its architecture dict
        self.params = {"family": "nas", "nas_arch": dict(sample)} if sample is not None else (params or {})
        record = getattr(nni.trial, "_params", None) or {}
        self.parameter_id = record.get("parameter_id")

    def intermediate(self, metrics: dict) -> None:
        if "default" in metrics:   # an epoch without validation (val_every_epoch off) has no metric for the tuner
            self.nni.report_intermediate_result(metrics)

    def final(self, metrics: dict) -> None:
        # the dashboard wants numbers: drop strings, send booleans as 0/1. Test accuracy stays in final.json: the
        # search (and whoever watches it) sees validation only; the test split is for the retrained winners.
        self.nni.report_final_result({k: (int(v) if isinstance(v, bool) else v) for k, v in metrics.items()
                                      if isinstance(v, (int, float)) and k != "test_accuracy"})


# run(cfg, args, sampled, out, report) -> final metrics; report is None outside NNI
Run = Callable[[TrialConfig, argparse.Namespace, dict, Path, Report | None], dict]


def train_run(cfg: TrialConfig, args: argparse.Namespace, sampled: dict, out: Path, report: Report | None) -> dict:
    """The trial's work: train(cfg). Outside NNI a progress bar, then the summary printed."""
    # Hyperband sends its budget as TRIAL_BUDGET: a promoted configuration resumes its lower-budget run
    resumable = args.resume or args.resume_dir or "TRIAL_BUDGET" in flatten_params(sampled)
    final = train(cfg, report=report, output_dir=out, data_dir=args.data_dir, progress=report is None,
                  resume_from=resume_path(cfg, args.resume_dir) if resumable else None).metrics
    if report is None:
        print(summary(cfg, final, out))
    return final


def main(argv=None, run: Run = train_run) -> int:
    """The trial's exit status: 0, 2 for parameters refused (and, outside NNI, for a network over the config's
    max_params, max_macs or max_latency_ms: trial.cost.ConstraintError), 1 for a failed run or an output that cannot
    be written (one line: the path and the cause), 128 + the signal's number when SIGINT (130) or SIGTERM (143) stopped it
    (train has then said in one line what it kept, and where; exit_with then ends the process by that signal).

    Under NNI a network over a limit is a result, not a failure: the trial reports its measured figures with
    `default` 0.0 (ranked last, as a diverged run is; `refused` 1) and exits 0. A FAILED trial would show as a fault
    in the dashboard and in the report's count of failed trials, and its final metric reaches the tuner only if NNI
    reads it before it records the exit; a tuner that never learns the point is bad would sample its neighbours again.
    The one line is on stderr (the trial's log) either way."""
    try:
        return _main(argv, run)
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        if not getattr(err, "said", False):
            print(f"[trial] stopped by {signal.Signals(signum).name}; nothing was kept", file=sys.stderr)
        return 128 + signum


def exit_with(status: int) -> NoReturn:
    """End the process with main's `status`; 128 + SIGINT or SIGTERM ends it by that signal, as an unhandled one
    would (a shell still sees 130 or 143; Python's subprocess a returncode of -2 or -15). NNI 3.0 records any
    non-zero exit code as FAILED and only a death by a signal as what it was: EARLY_STOPPED when its assessor stopped
    the trial, USER_CANCELED when a user did (nni_node/training_service/v3/compat.js, onTrialEnd). An exit code
    130 would show every trial Medianstop stopped as a failure, in the dashboard, in `experiments.check` and in the
    report's count of failed trials."""
    signum = status - 128
    if signum in (signal.SIGINT, signal.SIGTERM):
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(status)


def _main(argv, run: Run) -> int:
    args = parse_args(argv)
    reporter = NNIReporter() if os.environ.get("NNI_PLATFORM") else None
    try:
        file_params = load_params_file(args.params) if args.params else {}
        arch_params = load_arch_file(args.arch) if args.arch else {}
        if reporter:
            sampled = reporter.params
        else:
            sampled = sample_file(args.sample, args.sample_seed) if args.sample else {}
        cfg = resolve(file_params, arch_params, sampled, SMOKE if args.smoke else {}, cli_overrides(args))
    except (ConfigError, SearchSpaceError, OSError) as err:
        print(f"error: invalid trial parameters: {err}", file=sys.stderr)
        return 2

    # a dataset given by path is named by its folder or file (an absolute path would win the join)
    name = cfg.dataset if cfg.dataset in INFO else Path(cfg.dataset).stem
    out = Path(args.output_dir or os.environ.get("NNI_OUTPUT_DIR")
               or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.digest()}")
    make_dir(out)
    provenance = {"sampled_params": sampled, "params_digest": params_digest(sampled), "config_digest": cfg.digest(),
                  "parameter_id": reporter.parameter_id if reporter else None,
                  "trial_id": os.environ.get("NNI_TRIAL_JOB_ID"), "host": platform.node(),
                  # the address a remote trial's worker was reached at (NNI starts it over SSH)
                  "ssh_server": dict(enumerate(os.environ.get("SSH_CONNECTION", "").split())).get(2),
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "python": platform.python_version(), "argv": sys.argv}
    reported = out / "final_reported.json"
    earlier = _reported_by(reported, provenance["trial_id"]) if reporter else None
    if earlier is not None:
        # NNI re-runs a trial whose end it did not record (its manager was stopped or killed after the result
        # arrived, then the experiment was resumed): the result is in its database once already. A second run would
        # record a second result and overwrite this folder's record, also when NNI now sends other parameters (its
        # record of the trial mis-paired: experiments/launch/pairing.js)
        other = "" if earlier.get("params_digest") == provenance["params_digest"] else (
            f"; NNI now sends parameters {provenance['params_digest']}, it trained {earlier.get('params_digest')}")
        print(f"[trial] {reported} says trial {provenance['trial_id']} reported its final result already{other}; "
              "not training it again", file=sys.stderr)
        return 0
    write_file(out / "trial.json", json_text(provenance, default=str))
    try:
        final = run(cfg, args, sampled, out, reporter.intermediate if reporter else None)
    except ConstraintError as err:   # refused before its first step; train wrote its final.json
        print(f"error: network refused: {err}", file=sys.stderr)
        if reporter is None:
            return 2
        final = err.metrics
    except (DatasetError, ConfigError) as err:   # anything else is a bug: its traceback goes to the trial's log
        print(f"error: trial failed: {err}", file=sys.stderr)
        return 1
    if final.get("amp_fallback"):   # trained in float32 after a first bfloat16 epoch at chance (trial/precision.py)
        provenance.update(config_digest=dataclasses.replace(cfg, amp=False).digest(),
                          amp_fallback=final["amp_fallback"])
        write_file(out / "trial.json", json_text(provenance, default=str))
    # the trial's own record of what it trained with travels with its result (NNI 3.0 can mis-pair its record)
    final["params_digest"] = int(provenance["params_digest"], 16)
    if isinstance(provenance["parameter_id"], int):
        final["parameter_id"] = provenance["parameter_id"]
    if reporter:
        reporter.final(final)
        write_file(reported, json.dumps({"params_digest": provenance["params_digest"],
                                         "trial_id": provenance["trial_id"]}) + "\n")
    return 0


def _reported_by(marker: Path, trial_id: str | None) -> dict | None:
    """The marker a run of NNI trial `trial_id` wrote after its final result went to NNI, or None (no such run, or
    another trial's marker: an --output-dir shared by trials)."""
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return record if trial_id and isinstance(record, dict) and record.get("trial_id") == trial_id else None


def summary(cfg: TrialConfig, final: dict, out: Path) -> str:
    network = ("architecture", describe(cfg.nas_arch)) if cfg.family == "nas" else \
        ("network", "torchvision ResNet-18") if cfg.family == "resnet18" else \
        ("blocks x filters", f"{cfg.conv_layers} x {cfg.channels()}")
    rows = [("dataset", cfg.dataset), network,
            ("best val accuracy", f"{final['best_val_accuracy']:.4f} (epoch {final['best_epoch']})"),
            ("test accuracy", f"{final['test_accuracy']:.4f}" if "test_accuracy" in final else "not evaluated"),
            ("epochs run", final["epochs_run"]), ("parameters", f"{final['params']:,}"),
            ("train seconds", f"{final['train_seconds']:.1f} on {final['device']}"), ("outputs", str(out))]
    if "macs" in final:   # trial/cost.py's figures
        rows.insert(-2, ("cost", f"{final['macs']:,} MACs, {final['latency_ms']:.2f} ms batch-1 CPU latency "
                                 f"({final['latency_threads']} threads), {final['model_bytes'] / 1e6:.2f} MB"))
    if final.get("error"):
        rows.append(("DIVERGED", final["error"]))
    return "\n".join(f"{k:>18}: {v}" for k, v in rows)
