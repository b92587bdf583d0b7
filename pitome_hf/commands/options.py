"""Deprecated: the shared command-line flags moved to `pitome_hf.options` (the ground floor, so that measurement and
evaluation can build their parsers without importing a command). This module is an alias of that one."""

import sys
import warnings

import pitome_hf.options as _options

warnings.warn("pitome_hf.commands.options moved to pitome_hf.options; import it from there", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _options
