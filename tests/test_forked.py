"""tests/forked.py: a forked alignctl command behaves as the fresh interpreter it stands in for."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests import forked


class Probe(forked.Popen):
    """Runs, in the forked child, a stand-in for alignctl's main that reports what it sees."""

    def main(self, argv):
        if argv == ["wait"]:
            print("waiting", flush=True)
            time.sleep(60)
        logging.getLogger("some.library").warning("a library's warning")  # no handler: logging's last resort
        logging.getLogger("forked.probe").warning("a handler made in the test process")
        logging.getLogger("forked.closed").warning("a handler on a closed capture")
        warnings.warn("a UserWarning")  # printed, as a fresh interpreter prints it
        warnings.warn("a DeprecationWarning", DeprecationWarning)  # not shown outside __main__ by default
        print(json.dumps({"argv": argv, "cwd": os.getcwd(), "env": os.environ.get("FORKED_PROBE"), "pid": os.getpid(),
                          "threads": __import__("torch").get_num_threads()}))  # fmt: skip
        sys.exit(int(argv[0]))


def test_a_forked_command_has_its_own_pid_exit_status_streams_env_and_cwd(tmp_path, caplog):
    probe = logging.getLogger("forked.probe")  # its handler writes to this process's stderr, then to the child's
    probe.addHandler(logging.StreamHandler())
    probe.propagate = False
    from _pytest.capture import CaptureIO

    closed = CaptureIO()  # a finished test's capture, as a handler made then still holds it
    closed.close()
    stale = logging.getLogger("forked.closed")
    stale.addHandler(logging.StreamHandler(closed))
    stale.propagate = False
    proc = Probe([*forked.ALIGNCTL, "3", "train"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env={**os.environ, "FORKED_PROBE": "yes"}, cwd=tmp_path)  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert out, err
    seen = json.loads(out)
    assert proc.returncode == 3
    assert seen["argv"] == ["3", "train"] and seen["cwd"] == str(tmp_path) and seen["env"] == "yes"
    assert seen["pid"] == proc.pid != os.getpid() and seen["threads"] == 1
    assert "a library's warning" in err and "a handler made in the test process" in err, err
    assert "a handler on a closed capture" in err
    assert "UserWarning: a UserWarning" in err and "a DeprecationWarning" not in err, err
    assert "a library's warning" not in caplog.text  # not caught by this test's log capture


def test_a_forked_command_takes_signals():
    proc = Probe([*forked.ALIGNCTL, "wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "waiting\n"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM


def test_only_alignctl_on_one_thread_is_forked():
    assert forked.alignctl_argv([*forked.ALIGNCTL, "train", "x=1"]) == ["train", "x=1"]
    assert forked.alignctl_argv([*forked.ALIGNCTL, "train", "train.num_threads=1"]) == ["train", "train.num_threads=1"]
    for args in ([sys.executable, "-c", "pass"], [*forked.ALIGNCTL, "train", "-m"],
                 [*forked.ALIGNCTL, "train", "train.num_threads=2"], "alignctl train"):  # fmt: skip
        assert forked.alignctl_argv(args) is None
    out = forked.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert out.returncode == 0 and int(out.stdout) != os.getpid()


def test_run_returns_what_subprocess_run_returns(tmp_path):
    out = forked.run([*forked.ALIGNCTL, "train", "objective=nope", f"hydra.run.dir={tmp_path / 'run'}"],
                     capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("alignctl: error: objective=nope") and len(out.stderr.splitlines()) == 1, out.stderr
    with pytest.raises(subprocess.CalledProcessError):
        forked.run([*forked.ALIGNCTL, "train", "objective=nope"], capture_output=True, cwd=tmp_path, check=True)


@pytest.mark.slow
def test_a_forked_run_trains_and_evaluates_as_a_fresh_interpreter_does(tmp_path):
    """The same short DPO run started both ways, each with an empty cache: the same stderr lines (but for paths and
    seconds), losses, model and eval numbers."""
    from tests.e2e.test_train_eval import TINY

    def lines(stderr: str, root: Path) -> list[str]:
        return [re.sub(r"\b[\d.]+s\b", "<s>", line.replace(str(root), "<root>")) for line in stderr.splitlines()]

    seen = []
    for name, start in (("fresh", subprocess.run), ("forked", forked.run)):
        root = tmp_path / name
        out = start([*forked.ALIGNCTL, "train", *TINY, "train.max_steps=2", "tracking=none", f"hydra.run.dir={root}/run"],
                    capture_output=True, text=True, timeout=600, env={**os.environ, "ALIGNCTL_CACHE_DIR": str(root / "cache")})  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        run_dir = root / "run"
        seen.append({
            "stderr": lines(out.stderr, root),
            "losses": [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()],
            "model": (run_dir / "model" / "model.safetensors").read_bytes(),
            "eval": json.loads((run_dir / "eval.json").read_text().replace(str(root), "<root>")),
        })  # fmt: skip
    fresh, fork = seen
    assert any(loss is not None for loss in fresh["losses"]) and "reward_mean" in fresh["eval"]
    for key in fresh:
        assert fresh[key] == fork[key], key
