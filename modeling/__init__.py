"""Hub-bound model code: flat files importing each other with single-dot relative imports (torch + transformers only).

The package exports the merge core's public names below and, found by file name, every name in the `__all__` of each
family's files (`configuration_pitome_*.py`, `modeling_pitome_*.py`, `processing_pitome_*.py`): a new family's files
are exported without an edit here.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .merge_config import MergeSettings, token_schedule
from .merge_state import PaddedMergeState, unmerge

__all__ = ["MergeSettings", "PaddedMergeState", "token_schedule", "unmerge"]

_FAMILY_FILES = ("configuration_pitome_", "modeling_pitome_", "processing_pitome_")  # imported in this order
for _prefix in _FAMILY_FILES:
    for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if _info.name.startswith(_prefix):
            _module = _importlib.import_module(f".{_info.name}", __name__)
            for _name in _module.__all__:
                globals()[_name] = getattr(_module, _name)
                __all__.append(_name)
__all__ = sorted(set(__all__))
