"""`torch` and `torch.nn.functional`, imported the first time an attribute is read.

The modules a config's validation reads (alignctl.divergences, alignctl.objectives: their names, signatures and
registry entries) compute with torch but need none of it to be imported: through these stand-ins a bad command line
fails in about a second, where importing torch first takes seconds, and a minute on a cold disk. Each attribute is
kept once read, so computing code pays one dictionary lookup per name, as with the module itself.
"""

from __future__ import annotations

import importlib
from typing import Any


class _OnFirstUse:
    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:  # only called for names not kept yet
        value = getattr(importlib.import_module(self._module), name)
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"<{self._module}, imported on first use>"


torch: Any = _OnFirstUse("torch")
F: Any = _OnFirstUse("torch.nn.functional")
