"""`python -m alignctl.cli.main ...` as a fork of the test process instead of a fresh interpreter.

Importing alignctl's training stack (torch, transformers, TRL, peft, Hydra) takes about 8 s of the 2-core machine's
time, and the end-to-end tests start about a hundred alignctl processes: most of their time was imports. A fork of
the test worker, which has imported them once, is still a separate process (its own pid, exit status, pipes,
signals, SIGKILL), so the tests keep checking the CLI as a user's shell runs it; what it does not check is the
imports themselves, so tests/test_forked.py runs one training both ways and compares everything it writes.

`Popen` and `run` take subprocess's arguments. A command that is not alignctl's CLI runs as a real subprocess.
The forked child is made to look like a fresh interpreter's start: the given env and cwd, stdin/stdout/stderr on
the pipes asked for (sys.stdout block-buffered and sys.stderr line-buffered, as Python sets them on a pipe),
default signal handlers, sys.argv as `-m` sets it, no pytest logging handler on the root logger (so an unhandled
warning reaches stderr as it would), library log handlers pointed at the new stderr, rich consoles sized from the
child's COLUMNS, a fresh interpreter's warning filters with warnings printed (not recorded by pytest), one torch
thread, and only the child's own atexit handlers run at exit (never the test process's, which clean pytest's temp
folders). What the test process changed in its modules (a library's log level, say) the child shares, as it shares
their imports.
"""

from __future__ import annotations

import atexit
import builtins
import inspect
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import traceback
import warnings

ALIGNCTL = [sys.executable, "-m", "alignctl.cli.main"]

# subprocess.Popen._execute_child's parameters by name: the one seam (private, POSIX) through which a Popen starts
# its child; overriding it keeps Popen's own pipes, communicate(), wait(), poll() and signals. Its parameter list
# grew over Python versions, so it is read rather than written out.
_PARAMETERS = list(inspect.signature(subprocess.Popen._execute_child).parameters)[1:]
_RESET_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD)


def alignctl_argv(args) -> list[str] | None:
    """The CLI arguments when `args` runs alignctl's CLI with this interpreter and can be forked, else None: not a
    sweep (its joblib workers would be the test process's), and on one torch thread (GNU OpenMP's thread pool does
    not survive a fork: a child that asks for more threads than the one its parent may have used hangs)."""
    if isinstance(args, (str, bytes, os.PathLike)):
        return None
    args = [str(a) for a in args]
    if args[: len(ALIGNCTL)] != ALIGNCTL:
        return None
    argv = args[len(ALIGNCTL):]
    if any(a in ("-m", "--multirun") or (a.startswith("train.num_threads=") and a != "train.num_threads=1")
           for a in argv):  # fmt: skip
        return None
    return argv


class Popen(subprocess.Popen):
    def _execute_child(self, *args):
        named = dict(zip(_PARAMETERS, args))
        argv = alignctl_argv(named["args"])
        if argv is None or named["preexec_fn"] is not None or named["shell"]:
            return super()._execute_child(*args)
        _preload()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # never returns
            for fd in (named["p2cwrite"], named["c2pread"], named["errread"]):  # the test process's ends
                if fd != -1:
                    os.close(fd)
            _child(self.main, argv, named["cwd"], named["env"], named["p2cread"], named["c2pwrite"],
                   named["errwrite"], named["start_new_session"])  # fmt: skip
        self.pid = pid
        self._child_created = True
        self._close_pipe_fds(named["p2cread"], named["p2cwrite"], named["c2pread"], named["c2pwrite"],
                             named["errread"], named["errwrite"])  # fmt: skip

    def main(self, argv: list[str]) -> int | None:
        """What the forked child runs, as `python -m alignctl.cli.main` would."""
        from alignctl.cli import main as cli

        sys.argv = [cli.__file__, *argv]
        return cli.main()


def run(*popenargs, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """subprocess.run, starting the child through this module's Popen."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        code = process.poll()
    if check and code:
        raise subprocess.CalledProcessError(code, process.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(process.args, code, stdout, stderr)


_FRESH_FILTERS: list | None = None  # a fresh interpreter's warning filters, read once


def _preload() -> None:
    """Import what every alignctl command imports, once per test process, so the children share it; read a fresh
    interpreter's warning filters (pytest's own replace them in this process)."""
    global _FRESH_FILTERS
    if _FRESH_FILTERS is None:
        import alignctl.cli.main  # noqa: F401
        import alignctl.run.launch  # noqa: F401
        import alignctl.run.train  # noqa: F401

        code = ("import json, warnings; print(json.dumps([[a, getattr(m, 'pattern', m), m is not None and not "
                "isinstance(m, str), c.__name__, getattr(d, 'pattern', d), d is not None and not isinstance(d, str), n] "
                "for a, m, c, d, n in warnings.filters]))")  # fmt: skip
        out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
        _FRESH_FILTERS = [(action, re.compile(message, re.I) if message_re else message, getattr(builtins, category),
                           re.compile(module) if module_re else module, lineno)
                          for action, message, message_re, category, module, module_re, lineno
                          in json.loads(out.stdout)]  # fmt: skip


def _child(main, argv, cwd, env, stdin_fd, stdout_fd, stderr_fd, new_session) -> None:
    code = 1
    try:
        if new_session:
            os.setsid()
        for fd, target in ((stdin_fd, 0), (stdout_fd, 1), (stderr_fd, 2)):
            if fd != -1:
                os.dup2(fd, target)
        if stdin_fd == -1:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the test runner's stdin
        old_streams = {id(sys.stdout): "stdout", id(sys.stderr): "stderr", id(sys.__stdout__): "stdout",
                       id(sys.__stderr__): "stderr"}  # fmt: skip
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1))
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                                       errors="backslashreplace")  # fmt: skip
        _fresh_logging(old_streams)
        _fresh_warnings()
        atexit._clear()  # the test process's handlers are not the child's
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in _RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if env is not None:
            os.environ.clear()
            os.environ.update({os.fsdecode(k): os.fsdecode(v) for k, v in env.items()})
        if cwd is not None:
            os.chdir(cwd)
        _fresh_consoles()
        import torch

        torch.set_num_threads(1)  # see alignctl_argv
        torch.set_num_threads = _one_thread_only
        code = _exit_code(main(argv))
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:  # what a fresh interpreter does at exit: join its threads, run its atexit handlers, flush
        for step in (threading._shutdown, atexit._run_exitfuncs, logging.shutdown, sys.stdout.flush, sys.stderr.flush):
            try:
                step()
            except BaseException:
                traceback.print_exc()
                code = code or 1
        os._exit(code)


def _one_thread_only(threads: int) -> None:
    """torch.set_num_threads in a forked child: more than one thread would hang it (see alignctl_argv)."""
    if threads != 1:
        raise RuntimeError(f"a forked test child asked for {threads} torch threads; start this command with "
                           "subprocess instead of tests/forked.py")  # fmt: skip


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _fresh_logging(old_streams: dict[int, str]) -> None:
    """Drop pytest's handlers and point stream handlers made in the test process at the child's own streams."""
    loggers = [logging.getLogger()] + [obj for obj in logging.root.manager.loggerDict.values()
                                       if isinstance(obj, logging.Logger)]  # fmt: skip
    for logger in loggers:
        for handler in list(logger.handlers):
            if type(handler).__module__.startswith("_pytest"):
                logger.removeHandler(handler)
            elif type(handler) is logging.StreamHandler and (id(handler.stream) in old_streams or
                                                              type(handler.stream).__module__.startswith("_pytest")):
                # not setStream: it flushes the old stream, which may be a finished test's closed capture
                handler.stream = getattr(sys, old_streams.get(id(handler.stream), "stderr"))


def _fresh_warnings() -> None:
    """A fresh interpreter's filters, and warnings printed to stderr again (pytest records them into a list)."""
    warnings.filters[:] = _FRESH_FILTERS
    warnings._filters_mutated()
    warnings.showwarning = warnings._showwarning_orig
    warnings._showwarnmsg_impl = _print_warning


def _print_warning(msg) -> None:
    """warnings._showwarnmsg_impl as Python defines it."""
    file = msg.file if msg.file is not None else sys.stderr
    try:
        file.write(warnings._formatwarnmsg(msg))
    except OSError:
        pass


def _fresh_consoles() -> None:
    """rich fixes a Console's width from COLUMNS when it is made: consoles the test process made (module-level ones)
    read it again from the child's environment, as the consoles a fresh interpreter makes after its start would."""
    from rich.console import Console

    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if issubclass(type(value), Console):  # type(), not isinstance: no deprecated object's __class__ hook
                value._width = value._height = None
