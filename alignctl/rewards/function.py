"""Function reward: the user's own ``(prompts, completions) -> scores``, named in the config.

``reward=function reward.function=<module>:<callable>`` imports ``<module>`` with importlib (it must be
importable: installed, or on PYTHONPATH / the current directory) and takes ``<callable>`` from it (a dotted name
reaches into it: ``mymod:Scorer.score``). ``reward.function=path/to/file.py:<callable>`` loads a Python file
instead (relative paths from the current directory), for a script that is not a package. Nothing is unpickled:
the config carries only the name. The import happens in ``build``, before training starts, so a bad name fails
early; configs themselves never import anything.

The callable is called as ``fn(prompts, completions)`` with two lists of strings of equal length (a TRL-style
``def fn(prompts, completions, **kwargs)`` works too) and must return one finite number per completion: a list,
tuple, or 1-D numpy array / torch tensor (True/False count as 1/0). Anything else is a UsageError naming
``reward.function``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignctl.errors import UsageError, UserCodeError
from alignctl.rewards.base import Reward, RewardConfig, RewardContext, RewardEntry

EXPECTED = "<module>:<callable> or <file.py>:<callable>"
_IDENTIFIER_PATH = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


@dataclass
class FunctionConfig(RewardConfig):
    name: str = "function"
    function: str = "???"  # <module>:<callable> or <path/to/file.py>:<callable> (required)

    def __post_init__(self) -> None:
        super().__post_init__()  # the calibration options every reward has
        split(self.function)


def split(value: str) -> tuple[str, str]:
    """``"pkg.mod:fn"`` -> ``("pkg.mod", "fn")``; a UsageError for a value that names no callable."""
    if value in ("???", "", None):
        raise UsageError(f"reward.function is missing; set reward.function={EXPECTED}")
    where, sep, attr = str(value).rpartition(":")
    if not sep or not where or not re.fullmatch(_IDENTIFIER_PATH, attr):
        raise UsageError(f"reward.function={value} names no callable; expected {EXPECTED}")
    if not _is_file(where) and not re.fullmatch(_IDENTIFIER_PATH, where):
        raise UsageError(f"reward.function={value}: {where!r} is not a module name or a .py file; expected {EXPECTED}")
    return where, attr


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _reason(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({e.filename}, line {e.lineno})"
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _import_file(value: str, where: str) -> Any:
    path = Path(where).expanduser()
    if not path.exists():
        raise UsageError(f"reward.function={value}: {where} does not exist; expected {EXPECTED}")
    if not path.is_file() or path.suffix != ".py":
        raise UsageError(f"reward.function={value}: {where} is not a .py file; expected {EXPECTED}")
    path = path.resolve()
    # a private, stable module name per file, registered (as importlib's recipe does) so the module's own
    # dataclasses, pickling and relative lookups work
    name = f"alignctl_reward_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"reward.function={value}: {where} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise UsageError(f"reward.function={value}: importing {where} failed ({_reason(e)})") from e
    return module


def _import_module(value: str, where: str) -> Any:
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise UsageError(
            f"reward.function={value}: cannot import module {where} ({_reason(e)}); expected a module that is "
            "installed or on PYTHONPATH, or a path/to/file.py"
        ) from e
    except Exception as e:  # the module itself raised while importing
        raise UsageError(f"reward.function={value}: importing module {where} failed ({_reason(e)})") from e


def resolve(value: str) -> Callable[..., Any]:
    """The callable ``reward.function`` names, imported now; a one-line UsageError when it is not one."""
    where, attr = split(value)
    target = _import_file(value, where) if _is_file(where) else _import_module(value, where)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"reward.function={value}: {where} has no attribute {attr}; expected {EXPECTED}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(
            f"reward.function={value}: {attr} is not callable ({type(target).__name__} object); expected a function "
            "(prompts, completions) -> scores"
        )
    try:
        inspect.signature(target).bind(["prompt"], ["completion"])
    except TypeError as e:
        raise UsageError(
            f"reward.function={value}: {attr} cannot be called as {attr}(prompts, completions) ({e})"
        ) from None
    except ValueError:  # no signature to inspect (some builtins): found out at the first call
        pass
    return target


def check_scores(value: str, scores: Any, m: int) -> list[float]:
    """``scores`` as a list of ``m`` finite floats, else a UsageError naming ``reward.function``."""
    if hasattr(scores, "tolist") and getattr(scores, "ndim", 1) == 1:  # numpy array, torch tensor
        scores = scores.tolist()
    if not isinstance(scores, Sequence) or isinstance(scores, (str, bytes)):
        raise UsageError(
            f"reward.function={value} returned a {type(scores).__name__}, not a list of {m} scores (one per completion)"
        )
    if len(scores) != m:
        raise UsageError(f"reward.function={value} returned {len(scores)} scores for {m} completions")
    out = []
    for i, s in enumerate(scores):
        if hasattr(s, "item") and getattr(s, "ndim", None) == 0:  # a numpy or torch scalar
            s = s.item()
        if not isinstance(s, numbers.Real) or not math.isfinite(s):
            raise UsageError(
                f"reward.function={value} returned a non-finite or non-numeric score at index {i}: {s!r:.40}"
            )
        out.append(float(s))
    return out


def build(cfg: FunctionConfig, context: RewardContext) -> Reward:
    """Import the callable now (a bad name fails before training); return it wrapped with the score checks."""
    fn = resolve(cfg.function)
    value = cfg.function

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        try:
            scores = fn(list(prompts), list(completions))
        except Exception as e:  # the user's code: name it, and show its frames (not alignctl's or TRL's above it)
            own = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            raise UserCodeError(f"reward.function={value} raised {_reason(e)}", own) from None
        return check_scores(value, scores, len(completions))

    return reward


def _recipe(cfg: FunctionConfig) -> dict[str, Any]:
    """The name plus a hash of the source file it lives in (a .py path, an imported module, or a top-level module
    found without importing it), so an edited reward makes new cache keys."""
    recipe: dict[str, Any] = {"name": cfg.name, "function": cfg.function}
    try:
        where, _ = split(cfg.function)
        if _is_file(where):
            origin: str | None = str(Path(where).expanduser())
        elif where in sys.modules:
            origin = getattr(sys.modules[where], "__file__", None)
        else:
            spec = importlib.util.find_spec(where) if "." not in where else None  # dotted: would import parents
            origin = spec.origin if spec is not None else None
        if origin and Path(origin).is_file():
            recipe["source"] = hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:16]
    except (UsageError, ImportError, ValueError, OSError):
        pass
    return recipe


ENTRY = RewardEntry(
    name="function",
    schema=FunctionConfig,
    description="Your own (prompts, completions) -> scores, imported by name: reward.function=<module>:<callable> "
    "or <file.py>:<callable>.",
    build=build,
    recipe=_recipe,
)
