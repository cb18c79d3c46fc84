"""`alignctl <command>`: argv -> validated config -> the command. Bad input ends in one line and exit code 2."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from alignctl.cli import listing
from alignctl.config import compose
from alignctl.errors import UsageError, fail
from alignctl.run import eval_checks, launch, rundir

USAGE = """\
usage: alignctl <command> [overrides...]     (alignctl <command> --help: the command's keys and defaults)

commands:
  train [-m] [group=option] [key=value ...]   train (and evaluate) one run, or a sweep with -m
  eval run_dir=<dir> [out_dir=<dir>] [eval.key=value ...]   evaluate a run directory (default: into it)
  eval model_dir=<dir> [out_dir=<dir>] eval.reference=<dir>  evaluate an HF model dir (default: evals/<model>-<time>)
  ls [group]                                  list config groups, or the options of one group
  report <dir> [<dir> ...] [out=<dir>] [wandb=false]   compare runs: seed groups, 95% intervals, table, figures

examples:
  alignctl train
  alignctl train objective=fdpo divergence=js
  alignctl train -m objective=dpo,fdpo divergence=reverse_kl,js train.max_steps=20
  alignctl report runs/20261123-101500-sweep
"""


HELP = ("-h", "--help")
COMMAND_HELP = {
    "train": "usage: alignctl train [-m] [group=option ...] [key=value ...]\n"
    "Trains (and evaluates) one run into runs/<time>-<objective>-<divergence>-<other overrides>/, or with -m one run\n"
    "per combination of comma-separated values into runs/<time>-sweep/<n>-<objective>-<divergence>-<swept values>/.\n"
    "Groups and their options: alignctl ls [group]. Every key and its default for the options given (here:\n"
    "{options}):\n",
    "eval": "usage: alignctl eval run_dir=<run dir> [out_dir=<dir>] [eval.key=value ...]\n"
    "       alignctl eval model_dir=<HF model dir> [out_dir=<dir>] [group=option ...] [eval.reference=<dir>]\n"
    "Evaluates a run's final model (into the run dir unless out_dir=), or any model directory against the\n"
    "reference of the config given (evals/<model>-<time>/ unless out_dir=). The eval keys and their defaults:\n",
    "ls": "usage: alignctl ls [group]\nLists the config groups, or the options of one group with their descriptions.\n",
    "report": "usage: alignctl report <path> [<path> ...] [out=<dir>] [wandb=false] [kl_grid=[a,b] | kl_points=N]\n"
    "Reads every finished run directory (config.yaml, run.json, eval.json) at or under the paths; runs whose configs\n"
    "differ only in train.seed form a group: mean and 95% t-interval over seeds per metric. Runs on different\n"
    "datasets or models get separate sections. Prints the table and writes report.md, report.csv and\n"
    "frontier/diversity/pass_at_k/reliability PNGs into out= (default: the one path given). The figures are also\n"
    "logged to each run's W&B run (offline unless WANDB_MODE says otherwise) unless wandb=false. The groups are also\n"
    "compared at equal KL along their curve.jsonl (report.md's Matched KL, matched_kl.png): at kl_points=N evenly\n"
    "spaced KL values (default 5) over the range every run reaches, or at kl_grid=[a,b,...].\n",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not sys.stdout.isatty():  # piped to a file: rich would wrap every table and line at 80 columns
        os.environ.setdefault("COLUMNS", "200")
    if not argv or argv[0] in (*HELP, "help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"alignctl {version('alignctl')}")
        return 0
    command, rest = argv[0], argv[1:]
    commands = {"train": _train, "eval": _eval, "ls": _ls, "report": _report}
    if command not in commands:
        fail(f"unknown command {command!r}; choose one of: {', '.join(commands)}")
    try:
        if any(a in HELP for a in rest):
            return _help(command, [a for a in rest if a not in HELP])
        return commands[command](rest) or 0
    except UsageError as e:
        fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C before a run started (a run handles its own signals): nothing to save
        print("alignctl: interrupted before the run started", file=sys.stderr)
        raise SystemExit(130) from None
    return 0


def _help(command: str, overrides: list[str]) -> int:
    """A command's usage, and the keys it reads with their defaults (for the options the overrides choose)."""
    from omegaconf import OmegaConf

    text = COMMAND_HELP[command].format(options=" ".join(overrides) or "the defaults")
    print(text, end="")
    if command in ("ls", "report"):
        return 0
    own = ("run_dir=", "model_dir=", "out_dir=")  # eval's own arguments, not config overrides
    cfg = OmegaConf.structured(compose.compose_one([o for o in overrides if "=" in o and not o.startswith(own)]))
    print(OmegaConf.to_yaml(cfg.eval if command == "eval" else cfg), end="")
    return 0


def _train(args: list[str]) -> int:
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise UsageError(f"unknown flag {flags[0]!r} for train; valid flags: -m/--multirun")
    jobs = launch.validate(overrides, multirun=multirun)  # every job of a sweep, before anything loads
    launch.run_hydra(overrides, jobs, multirun=multirun)
    return 0


def _eval(args: list[str]) -> int:
    own = ("run_dir", "model_dir", "out_dir")
    keyed = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in own)
    overrides = [a for a in args if a.split("=", 1)[0] not in own]
    if ("run_dir" in keyed) == ("model_dir" in keyed):
        raise UsageError("eval needs exactly one of run_dir=<run directory> or model_dir=<HF model directory>")
    if "run_dir" in keyed:
        run_dir = Path(keyed["run_dir"])
        cfg = compose.load_run(run_dir, overrides)
        model_dir = run_dir / "model"
        if not (model_dir / "config.json").is_file():
            raise UsageError(f"run_dir={run_dir} has no final model at {model_dir}; was the run finished?")
        out_dir = Path(keyed.get("out_dir", run_dir))  # default: refresh the run's own eval files
    else:
        model_dir = Path(keyed["model_dir"])
        cfg = compose.compose_one(overrides)
        if not (model_dir / "config.json").is_file():
            raise UsageError(f"model_dir={model_dir} is not an HF model directory (no config.json)")
        # never write into someone's model directory: evals/<model>-<time>/ unless out_dir= says where
        out_dir = Path(keyed.get("out_dir") or f"evals/{model_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}")
    # never over another run's or another model's results (rundir.check_eval_out_dir), before torch loads
    rundir.check_eval_out_dir(out_dir, model_dir)
    eval_checks.check(cfg.eval)
    eval_checks.check_reward_model(cfg)
    # torch and transformers load only once the command line has been checked
    from alignctl.run import evaluate as eval_run
    from alignctl.run import runtime

    runtime.prepare(cfg)
    eval_run.evaluate_and_report(cfg, model_dir, out_dir)
    return 0


def _ls(args: list[str]) -> int:
    if len(args) > 1:
        raise UsageError("ls takes at most one group name")
    listing.show(args[0] if args else None)
    return 0


def _report(args: list[str]) -> int:
    from alignctl.report import matched_kl
    from alignctl.report import tables as report  # torch (its curves' metrics): only for this command

    own = ("out", "wandb", *matched_kl.OPTIONS)
    keyed = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in own)
    paths = [Path(a) for a in args if a.split("=", 1)[0] not in own]
    flags = [str(p) for p in paths if str(p).startswith("-")]
    if flags:
        raise UsageError(f"unknown flag {flags[0]!r} for report; it takes paths and out=<dir>, wandb=false")
    unknown = [str(p) for p in paths if "=" in str(p) and not p.exists()]
    if unknown:
        raise UsageError(f"unknown report option {unknown[0]!r}; valid: out=<dir>, wandb=true|false, "
                         "kl_grid=[a,b,...], kl_points=N")
    if not paths:
        raise UsageError("report needs at least one run directory or folder of runs: alignctl report <path> ...")
    switch = keyed.get("wandb", "true").lower()
    if switch not in ("true", "false", "1", "0", "yes", "no"):
        raise UsageError(f"wandb={keyed['wandb']!r} for report; valid: true, false")
    if "out" in keyed and not keyed["out"]:
        raise UsageError("out= needs a directory: out=<dir>")
    if "out" not in keyed and len(paths) > 1:
        raise UsageError(f"report of {len(paths)} paths needs out=<dir> to say where report.md goes")
    out_dir = Path(keyed.get("out") or paths[0])
    kl = matched_kl.parse_options(keyed)  # kl_grid=[a,b,...] or kl_points=N: the matched-KL comparison's grid
    report.report(paths, out_dir, wandb=switch in ("true", "1", "yes"), **kl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
