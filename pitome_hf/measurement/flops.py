"""Deprecated: the analytic FLOP counts moved to `pitome_hf.flops` (the registry floor: the registry names each
family's count, and flops reads only the model code). This module is an alias of that one."""

import sys
import warnings

import pitome_hf.flops as _flops

warnings.warn("pitome_hf.measurement.flops moved to pitome_hf.flops; import it from there", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _flops
