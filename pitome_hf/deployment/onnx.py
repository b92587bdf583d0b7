"""ONNX export of PiToMe / ToMe vision models, and running them with ONNX Runtime.

    from pitome_hf.deployment.onnx import export_onnx
    info = export_onnx(model, "vit-pitome.onnx", batch_size=64, keep_ratio=0.9)   # model: stock or PiToMe
    info["outputs"], info["max_abs_diff"]                                          # ORT vs PyTorch on the example

Why a static graph works: once the input size and the merge settings are fixed, every layer's r is known ahead
(`token_schedule`), so every shape in a merged forward is a constant; which tokens merge is data (sort, gather,
scatter), which ONNX holds. The exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript):

* the TorchScript path (`dynamo=False`) fails on the merge step (its tracer has no schema for `Tensor.scatter_` with a
  bool value, `merging._new_positions`);
* the dynamo path lacks a translation of `aten::sort.stable` (the merge ranks energies with a stable sort): it is
  given one here (`_sort_stable`: ONNX TopK with k = the axis length; ONNX Runtime's TopK breaks ties by the lower
  index, which is a stable sort, checked by tests/test_export.py on inputs full of ties);
* while exporting, transformers materialises an all-ones (B, 1, N, N) attention mask ("no content check while
  exporting") that the merged layers would then add to a shrunk sequence; with no padding mask there is nothing to
  check, so `_no_mask_when_none` lets transformers skip it, as it does in eager mode. The graph is the same forward.

Outputs carry the names `optimum` / ONNX Runtime users expect: `pixel_values` -> `logits` (classifiers), else
`image_embeds` (CLIP with projection), `last_hidden_state`, `pooler_output` (whichever the model returns). The merge
settings, the token schedule, the input size and the versions are in the model's `metadata_props` (`pitome_hf.*`).
Text models merge padded batches with per-row budgets read from the attention mask at run time, and composite
models (CLIP/SigLIP with their text tower, LLaVA) take text: both are refused, naming what to export instead.

Needs `onnx`, `onnxruntime` and `onnxscript`: `pip install "pitome_hf[onnx]"` (imported only when used).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Optional

import numpy as np
import torch

INSTALL_HINT = 'pip install "pitome_hf[onnx]"'
DEFAULT_OPSET = 18
INPUT_NAME = "pixel_values"
# the output names of each kind of model, in the order optimum's ONNX configs list them
CLASSIFIER_OUTPUTS = ("logits",)
FEATURE_OUTPUTS = ("image_embeds", "last_hidden_state", "pooler_output")
METADATA_PREFIX = "pitome_hf."


def require_onnx(*modules: str) -> None:
    """Import the ONNX stack lazily; a missing one is one line naming the extra to install."""
    import importlib

    for module in modules or ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(f"{module} is not installed; ONNX export and ONNX Runtime need it: {INSTALL_HINT}") from None


# ----------------------------------------------------------------------------------------------------------------
# What can be exported
# ----------------------------------------------------------------------------------------------------------------
def _vision_config(config):
    return getattr(config, "vision_config", None) or config


def _side(value) -> int:
    return int(value if isinstance(value, int) else value[0])


def check_exportable(model) -> None:
    """Refuse (ValueError, one line) a model whose forward cannot be one static graph on pixel_values."""
    from pitome_hf.families import entry_for_class, family_of

    try:
        entry = entry_for_class(type(model))
    except TypeError as error:
        raise ValueError(str(error)) from None
    family = family_of(entry.config_class.model_type)
    name = type(model).__name__
    if family.onnx_refusal:
        raise ValueError(f"{name} cannot be exported: {family.onnx_refusal}")
    if getattr(model.config, "text_config", None) is not None:
        towers = [e.pitome.__name__ for e in family.models if e.pipeline_tag == "image-feature-extraction"]
        instead = f"; export its vision tower instead ({', '.join(towers)})" if towers else ""
        raise ValueError(f"{name} takes text as well as images and cannot be exported as one pixel_values graph{instead}.")


def example_input(config, batch_size: int, image_size: Optional[int] = None, seed: int = 0) -> torch.Tensor:
    """A fixed random (batch, channels, S, S) input at the model's own size (or `image_size`)."""
    vision = _vision_config(config)
    size = _side(vision.image_size) if image_size is None else int(image_size)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, getattr(vision, "num_channels", 3), size, size, generator=g)


def output_names(output) -> tuple:
    """The names (and order) of the exported outputs, read off one PyTorch output."""
    present = lambda n: isinstance(getattr(output, n, None), torch.Tensor)  # noqa: E731
    if present("logits"):
        return CLASSIFIER_OUTPUTS
    names = tuple(n for n in FEATURE_OUTPUTS if present(n))
    if not names:
        raise ValueError(f"{type(output).__name__} has none of the outputs {CLASSIFIER_OUTPUTS + FEATURE_OUTPUTS}.")
    return names


class _Outputs(torch.nn.Module):
    """The model's forward on pixel_values, returning the named outputs as a tuple (what the graph returns)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values, return_dict=True)
        return tuple(getattr(out, n) for n in self.names)


# ----------------------------------------------------------------------------------------------------------------
# The exporter's two gaps (see the module docstring)
# ----------------------------------------------------------------------------------------------------------------
def _sort_stable(self, stable=None, dim: int = -1, descending: bool = False):
    """aten::sort.stable as ONNX TopK over the whole axis (ONNX Runtime's TopK is stable: ties by lower index)."""
    from onnxscript import opset18 as op

    k = op.Shape(self, start=dim, end=dim + 1) if dim != -1 else op.Shape(self, start=-1)
    values, indices = op.TopK(self, k, axis=dim, largest=1 if descending else 0, sorted=1)
    return values, indices


def translation_table() -> dict:
    return {torch.ops.aten.sort.stable: _sort_stable}


@contextlib.contextmanager
def _no_mask_when_none():
    """While exporting: no attention mask when none was given (as in eager mode), instead of an all-ones (B, 1, N, N)
    mask of the unmerged length that merged layers cannot use."""
    import transformers.masking_utils as masking

    original = masking._ignore_bidirectional_mask_sdpa

    def skip(padding_mask, kv_length, local_attention_size=None):
        if padding_mask is None and local_attention_size is None:
            return True
        return original(padding_mask, kv_length, local_attention_size)

    masking._ignore_bidirectional_mask_sdpa = skip
    try:
        yield
    finally:
        masking._ignore_bidirectional_mask_sdpa = original


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------
def merged_model(model, **settings):
    """`model` (stock or PiToMe) as the PiToMe model with `settings` (none given: the model as it is), eval mode."""
    from pitome_hf.apply import apply_pitome

    if settings or not hasattr(model.config, "merge_settings"):
        model = apply_pitome(model, **settings)
    return model.eval()


def merge_metadata(model, batch_size, image_size: int, dynamic_batch: bool, opset: int) -> dict:
    """metadata_props of an exported model: the merge settings (every merge field), the token schedule at this input
    size, the input, the versions."""
    import transformers

    import pitome_hf
    from pitome_hf.families import family_of
    from pitome_hf.modeling.merge_config import MERGE_FIELDS, token_schedule

    config = model.config
    vision = _vision_config(config)
    patch = _side(vision.patch_size)
    settings = {k: getattr(vision, k, getattr(config, k, None)) for k in MERGE_FIELDS}
    num_patches = (image_size // patch) ** 2
    values = {
        "merge_settings": json.dumps(settings, sort_keys=True),
        "token_schedule": json.dumps(token_schedule(config, num_tokens=num_patches)),
        "model_class": type(model).__name__,
        "family": family_of(config).name,
        "input": f"{INPUT_NAME} ({'batch' if dynamic_batch else batch_size}, {getattr(vision, 'num_channels', 3)}, "
                 f"{image_size}, {image_size}) float32",
        "batch_size": "dynamic" if dynamic_batch else str(batch_size),
        "image_size": str(image_size),
        "exporter": f"torch.onnx.export(dynamo=True), opset {opset}",
        "versions": f"pitome_hf {pitome_hf.__version__}, torch {torch.__version__}, transformers {transformers.__version__}",
    }
    for key in ("merge_method", "keep_ratio", "merge_r"):  # the headline settings, readable without JSON
        values[key] = json.dumps(settings.get(key))
    return {METADATA_PREFIX + k: str(v) for k, v in values.items()}


def read_metadata(path) -> dict:
    """The `pitome_hf.*` metadata_props of an exported file, prefix removed."""
    require_onnx("onnx")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def _check_image_size(model, image_size: Optional[int], batch_size: int) -> int:
    vision = _vision_config(model.config)
    own = _side(vision.image_size)
    size = own if image_size is None else image_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch size {batch_size!r}: must be an integer >= 1.")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"image size {size!r}: must be a positive integer number of pixels.")
    if size != own:  # a fixed-size export: only sizes the model's forward takes (DINOv2 interpolates, ViT does not)
        try:
            with torch.inference_mode():
                model(pixel_values=example_input(model.config, 1, size))
        except Exception as error:
            patch = _side(vision.patch_size)
            raise ValueError(f"image size {size} px: {type(model).__name__} does not run at that size ({' '.join(str(error).split())[:200]}); "
                             f"allowed: its config's {own} px (models that interpolate position embeddings, such as "
                             f"DINOv2, also take multiples of the patch size {patch}).") from None
    return size


def export_onnx(model, output, *, batch_size: int = 1, image_size: Optional[int] = None, dynamic_batch: bool = False,
                opset: int = DEFAULT_OPSET, check: bool = True, **settings) -> dict:
    """Export `model` (a stock or PiToMe vision model, with merge `settings` applied first) to the ONNX file `output`.

    The graph is static for `batch_size` images of `image_size` px (default: the config's), or takes any batch with
    `dynamic_batch`. `onnx.checker` runs on the file; with `check` ONNX Runtime runs it on the example input and the
    result is compared with PyTorch's. The file is written under a temporary name and renamed into place: a failure
    leaves nothing. Returns a dict: path, inputs, outputs, metadata, and (with check) max_abs_diff per output and
    top1_agreement (classifiers)."""
    require_onnx()
    import onnx

    check_exportable(model)  # the merged model is of the same class
    model = merged_model(model, **settings)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in (None, "eager", "sdpa"):
        raise ValueError(f"attn_implementation={attn!r} cannot be exported; use 'sdpa' or 'eager'.")
    size = _check_image_size(model, image_size, batch_size)
    x = example_input(model.config, batch_size, size)
    with torch.inference_mode():
        reference = model(pixel_values=x, return_dict=True)
    names = output_names(reference)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    dynamic = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    try:
        import logging
        import warnings

        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with _no_mask_when_none(), warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    _Outputs(model, names).eval(), (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=list(names), dynamic_shapes=dynamic, custom_translation_table=translation_table(),
                    optimize=True, verify=False, report=False)
        finally:
            quiet.setLevel(level)
        proto = program.model_proto
        metadata = merge_metadata(model, batch_size, size, dynamic_batch, opset)
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save_model(proto, str(staging))
        onnx.checker.check_model(str(staging), full_check=True)
        info = dict(path=str(output), inputs=[INPUT_NAME], outputs=list(names), metadata=metadata,
                    batch_size=None if dynamic_batch else batch_size, image_size=size, opset=opset)
        if check:
            got = run_session(session(staging), x.numpy())
            info.update(compare(dict(zip(names, got)), {n: getattr(reference, n).numpy() for n in names}))
        os.replace(staging, output)
    finally:
        if staging.exists():
            staging.unlink()
    return info


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime
# ----------------------------------------------------------------------------------------------------------------
def session(path, providers=("CPUExecutionProvider",), threads: Optional[int] = None, profile: Optional[str] = None,
            spinning: bool = True):
    """An ONNX Runtime session of `path`: all graph optimisations, `threads` intra-op threads (default: torch's),
    profiling to `profile` (a file-name prefix) when given. `spinning=False` stops the intra-op threads from
    busy-waiting after a run (`session.intra_op.allow_spinning`): needed where several sessions (or ORT and torch)
    take turns on the same cores, as in a side-by-side benchmark, or the idle session's spinning threads take the
    cores from the running one."""
    require_onnx("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(f"ONNX Runtime provider {', '.join(missing)} is not available here; available: "
                         f"{', '.join(available)}.")
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def run_session(sess, pixel_values: np.ndarray) -> list[np.ndarray]:
    return sess.run(None, {INPUT_NAME: np.ascontiguousarray(pixel_values, dtype=np.float32)})


def compare(got: dict, want: dict) -> dict:
    """max |ORT - PyTorch| per output, and top-1 agreement of logits."""
    out = {"max_abs_diff": {n: float(np.abs(got[n] - want[n]).max()) for n in want}}
    if "logits" in want:
        out["top1_agreement"] = float((got["logits"].argmax(-1) == want["logits"].argmax(-1)).mean())
    return out


def check_file(path, model, batch_size: Optional[int] = None, atol: float = 1e-3) -> dict:
    """Load `path` in ONNX Runtime, run it and `model` (PyTorch) on one example input of the exported size, and
    return the comparison; ValueError when an output differs by more than `atol` (relative to its scale) or a
    classifier's top-1 differs."""
    meta = read_metadata(path)
    size = int(meta.get("image_size") or _side(_vision_config(model.config).image_size))
    fixed = meta.get("batch_size", "1")
    batch = int(fixed) if fixed.isdigit() else (batch_size or 2)
    x = example_input(model.config, batch, size, seed=1)
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    with torch.inference_mode():
        reference = model.eval()(pixel_values=x, return_dict=True)
    result = compare(dict(zip(names, run_session(sess, x.numpy()))), {n: getattr(reference, n).numpy() for n in names})
    for name, diff in result["max_abs_diff"].items():
        scale = float(np.abs(getattr(reference, name).numpy()).max()) or 1.0
        if diff > atol * max(1.0, scale):
            raise ValueError(f"{path}: ONNX Runtime's {name} differs from PyTorch's by {diff:.3g} (allowed "
                             f"{atol * max(1.0, scale):.3g}) on an example input; re-export it from this model.")
    if result.get("top1_agreement", 1.0) < 1.0:
        raise ValueError(f"{path}: ONNX Runtime's top-1 differs from PyTorch's on {1 - result['top1_agreement']:.0%} of "
                         "an example batch; re-export it from this model.")
    return result


def temporary_export(model, batch_size: int, directory: Optional[str] = None, **kwargs) -> str:
    """Export to a file in a temporary folder (for benchmarks and checks); returns its path."""
    folder = tempfile.mkdtemp(prefix="pitome_onnx_", dir=directory)
    path = Path(folder) / "model.onnx"
    export_onnx(model, path, batch_size=batch_size, check=False, **kwargs)
    return str(path)
