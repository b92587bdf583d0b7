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
settings, the token schedule, the input size and the versions are in the model's `metadata_props` (`pitome_hf.*`): the
opset, batch and input size as read back from the written graph, the token schedule as the exported forward ran it.
Opsets 18 to 25 are written (`opset_range`: torch's translations are opset 18, onnxscript converts up to 25); others
are refused rather than silently written at 18.
Text models merge padded batches with per-row budgets read from the attention mask at run time, and composite
models (CLIP/SigLIP with their text tower, LLaVA) take text: both are refused, naming what to export instead.

Needs `onnx`, `onnxruntime` and `onnxscript`: `pip install "pitome_hf[onnx]"` (imported only when used).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
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


def opset_range() -> tuple[int, int]:
    """The ONNX opsets the exporter can write: from torch.onnx's own (its translations are written for opset 18; a
    lower request silently stays 18) to the highest onnxscript's version converter reaches (beyond it the conversion
    fails and the file is left at 18 with newer operators: an invalid model)."""
    try:
        from onnxscript.version_converter import _version_converter as converter

        return int(converter.SUPPORTED_MIN_ONNX_OPSET), int(converter.SUPPORTED_MAX_ONNX_OPSET)
    except (ImportError, AttributeError):  # another onnxscript: the range of the one this was checked with (0.7)
        return 18, 25


def check_opset(opset) -> int:
    """`opset`, refused (ValueError, one line naming it and the allowed range) unless the exporter can write it."""
    low, high = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise ValueError(f"opset {opset!r} is out of range: the exporter (torch.onnx dynamo, onnxscript) writes opsets "
                         f"{low} to {high}; the default is {DEFAULT_OPSET}.")
    return opset


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


def export_refusal(entry, name: Optional[str] = None) -> Optional[str]:
    """Why the models of the registry `entry` cannot be one static graph on pixel_values (one line, naming `name`,
    default the stock class), or None when they can: text models and models that take text are refused."""
    from pitome_hf.families import family_of

    family = family_of(entry.config_class.model_type)
    name = name or entry.stock.__name__
    if family.onnx_refusal:
        return f"{name} cannot be exported: {family.onnx_refusal}"
    if "text_config" in getattr(entry.config_class, "sub_configs", {}):
        towers = [e.pitome.__name__ for e in family.models if e.pipeline_tag == "image-feature-extraction"]
        instead = f"; export its vision tower instead ({', '.join(towers)})" if towers else ""
        return f"{name} takes text as well as images and cannot be exported as one pixel_values graph{instead}."
    return None


def exportable_classes() -> list[str]:
    """The stock classes `export_onnx` takes (each, or its PiToMe class): the registry's entries it does not refuse."""
    from pitome_hf.families import all_entries

    return sorted({e.stock.__name__ for e in all_entries() if export_refusal(e) is None})


def unsupported(what: str) -> str:
    """The one line for a model that no registry entry holds: `what` (a class, or a checkpoint's model_type and
    architectures) and the classes export takes."""
    return (f"{what} cannot be exported to ONNX; export takes {', '.join(exportable_classes())} "
            "(stock or PiToMe, or a checkpoint of one).")


def check_exportable(model) -> None:
    """Refuse (ValueError, one line) a model whose forward cannot be one static graph on pixel_values."""
    from pitome_hf.families import entry_for_class

    try:
        entry = entry_for_class(type(model))
    except TypeError:
        raise ValueError(unsupported(type(model).__name__)) from None
    refusal = export_refusal(entry, type(model).__name__)
    if refusal:
        raise ValueError(refusal)


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


def graph_facts(proto) -> dict:
    """What a written model says of itself, read from its graph (never from the request that made it): `opset` (of the
    default domain), `input` (the first input's name), `batch` (an int, or "dynamic" for a symbolic axis),
    `channels`, `image_size` (its side; (h, w) when not square), `dtype` (numpy's name), `outputs` (names)."""
    import onnx

    opset = next((i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")), None)
    if not proto.graph.input:
        return dict(opset=opset, input=None, batch=None, channels=None, image_size=None, dtype=None,
                    outputs=[o.name for o in proto.graph.output])
    first = proto.graph.input[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else "dynamic" for d in first.shape.dim]
    batch, channels, height, width = dims if len(dims) == 4 else (None,) * 4
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(first.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = None
    return dict(opset=opset, input=proto.graph.input[0].name, batch=batch, channels=channels,
                image_size=height if height == width else (height, width), dtype=dtype,
                outputs=[o.name for o in proto.graph.output])


def stock_config_dict(model) -> dict:
    """config.json of an export folder, as stock transformers and optimum's `ORTModelFor...` classes read it: the
    stock class's `model_type` and `architectures` (ViTForImageClassification: "vit"), no `auto_map` (an ONNX folder
    holds no code files, and an auto_map makes them ask for remote code), every other field of the exported model's
    config kept, the merge fields among them (stock configs keep unknown fields as attributes)."""
    from pitome_hf.families import entry_for_class

    entry = entry_for_class(type(model))
    config = model.config.to_dict()
    config.pop("auto_map", None)
    config["model_type"] = entry.stock.config_class.model_type
    config["architectures"] = [entry.stock.__name__]
    return config


def merge_metadata(model, facts: dict, token_counts) -> dict:
    """metadata_props of an exported model: the merge settings (every merge field of the exported model's config), the
    token schedule its forward ran (`token_counts`), and the input and opset as the written graph has them
    (`graph_facts`), the versions."""
    import transformers

    import pitome_hf
    from pitome_hf.families import family_of
    # pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
    from pitome_hf.modeling.merge_config import MERGE_FIELDS

    config = model.config
    vision = _vision_config(config)
    settings = {k: getattr(vision, k, getattr(config, k, None)) for k in MERGE_FIELDS}
    batch, size = facts["batch"], facts["image_size"]
    values = {
        "merge_settings": json.dumps(settings, sort_keys=True),
        "token_schedule": json.dumps([int(n) for n in token_counts]),
        "model_class": type(model).__name__,
        "family": family_of(config).name,
        "input": f"{facts['input']} ({'batch' if batch == 'dynamic' else batch}, {facts['channels']}, {size}, {size}) "
                 f"{facts['dtype']}",
        "batch_size": str(batch),
        "image_size": str(size),
        "exporter": f"torch.onnx.export(dynamo=True), opset {facts['opset']}",
        "versions": f"pitome_hf {pitome_hf.__version__}, torch {torch.__version__}, transformers {transformers.__version__}",
    }
    for key in ("merge_method", "keep_ratio", "merge_r"):  # the headline settings, readable without JSON
        values[key] = json.dumps(settings.get(key))
    return {METADATA_PREFIX + k: str(v) for k, v in values.items()}


def load_export(path, what: str = "the ONNX file"):
    """The ModelProto of an ONNX file (its external data not loaded), refused in one line naming `what` and the path:
    a folder (naming the model.onnx in it), a missing file, a file that is no valid ONNX model (another file, a
    truncated write)."""
    require_onnx("onnx")
    import onnx

    path = Path(path)
    if path.is_dir():
        inner = path / "model.onnx"
        hint = f"give the file in it: {inner}" if inner.is_file() else "it holds no model.onnx"
        raise ValueError(f"{what} {path} is a folder, not an ONNX file; {hint}.")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file (give a model.onnx written by `pitome-hf export`).")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as error:  # a protobuf DecodeError, or a message that parses into no valid model
        why = " ".join(str(error).split())[:160] or type(error).__name__
        raise ValueError(f"{what} {path} is not a valid ONNX model ({why}): give a model.onnx written by "
                         "`pitome-hf export`.") from None
    return proto


def read_metadata(path, what: str = "the ONNX file") -> dict:
    """The `pitome_hf.*` metadata_props of an exported file, prefix removed (see `load_export` for the refusals)."""
    proto = load_export(path, what)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


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
    `dynamic_batch` (traced on max(batch_size, 2) images). `onnx.checker` runs on the file; with `check` ONNX Runtime
    runs it on the example input (and, for a dynamic batch, on a batch one larger) and the result is compared with
    PyTorch's. The file is written under a temporary name and renamed into place: a failure
    leaves nothing, and the temporary files of killed exports to `output` are removed. `opset` must be in
    `opset_range()`; a file whose opset, batch or input size differs from the request is refused. Returns a dict:
    path, inputs, outputs, metadata, batch_size, image_size and opset (read from the written graph), and (with check)
    max_abs_diff per output and top1_agreement (classifiers)."""
    require_onnx()
    import onnx

    from pitome_hf.checkpoints import staging_path

    check_opset(opset)
    check_exportable(model)  # the merged model is of the same class
    model = merged_model(model, **settings)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in (None, "eager", "sdpa"):
        raise ValueError(f"attn_implementation={attn!r} cannot be exported; use 'sdpa' or 'eager'.")
    size = _check_image_size(model, image_size, batch_size)
    # a dynamic batch is traced on at least 2 images: traced on 1, torch.export may specialise the axis (SigLIP does)
    x = example_input(model.config, max(batch_size, 2) if dynamic_batch else batch_size, size)
    with torch.inference_mode():
        reference = model(pixel_values=x, return_dict=True)
    names = output_names(reference)
    counts = getattr(reference, "token_counts", None)
    if counts is None:  # the schedule the forward runs, when the output does not carry it
        from pitome_hf.modeling.merge_config import token_schedule

        counts = token_schedule(model.config, num_tokens=(size // _side(_vision_config(model.config).patch_size)) ** 2)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with staging_path(output) as staging:  # stale staging files of killed exports to `output` are removed first
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
            facts = graph_facts(proto)
            asked = dict(opset=opset, batch="dynamic" if dynamic_batch else batch_size, image_size=size,
                         channels=int(x.shape[1]))
            differ = {k: (facts[k], v) for k, v in asked.items() if facts[k] != v}
            if differ:
                raise RuntimeError("the exporter wrote another graph than asked (" + ", ".join(
                    f"{k} {got} instead of {want}" for k, (got, want) in differ.items()) + "); nothing was written.")
            metadata = merge_metadata(model, facts, counts)
            del proto.metadata_props[:]
            for key, value in metadata.items():
                proto.metadata_props.add(key=key, value=value)
            onnx.save_model(proto, str(staging))
            onnx.checker.check_model(str(staging), full_check=True)
            info = dict(path=str(output), inputs=[facts["input"]], outputs=facts["outputs"], metadata=metadata,
                        batch_size=None if facts["batch"] == "dynamic" else facts["batch"],
                        image_size=facts["image_size"], opset=facts["opset"])
            if check:
                try:
                    got = run_session(session(staging), x.numpy())
                except Exception as error:  # ONNX Runtime refuses the graph or fails running it
                    import onnxruntime

                    raise RuntimeError(f"ONNX Runtime {onnxruntime.__version__} cannot run the graph exported at opset "
                                       f"{opset} ({_ort_reason(error)}); nothing was written. Export at another "
                                       f"opset (the default is {DEFAULT_OPSET}).") from None
                info.update(compare(dict(zip(names, got)), {n: getattr(reference, n).numpy() for n in names}))
                if dynamic_batch:  # the batch axis really is free: a batch of another size than the traced one
                    other = example_input(model.config, int(x.shape[0]) + 1, size, seed=2)
                    with torch.inference_mode():
                        want = model(pixel_values=other, return_dict=True)
                    try:
                        got = run_session(session(staging), other.numpy())
                    except Exception as error:
                        raise RuntimeError(f"the graph exported with a dynamic batch does not run a batch of "
                                           f"{other.shape[0]} in ONNX Runtime ({_ort_reason(error)}); nothing was "
                                           "written. Export a static batch instead (--batch-size N).") from None
                    more = compare(dict(zip(names, got)), {n: getattr(want, n).numpy() for n in names})
                    info["max_abs_diff"] = {n: max(v, more["max_abs_diff"][n]) for n, v in info["max_abs_diff"].items()}
                    if "top1_agreement" in info:
                        info["top1_agreement"] = min(info["top1_agreement"], more["top1_agreement"])
            os.replace(staging, output)
        finally:
            if staging.exists():
                staging.unlink()
    return info


def _ort_reason(error: BaseException) -> str:
    """ONNX Runtime's error in a few words: the node, and the failed condition's explanation (not its C++ frame)."""
    text = " ".join(str(error).split())
    node = re.search(r"Name:'([^']+)'", text)
    tail = text.rsplit(" was false. ", 1)[-1] if " was false. " in text else text.rsplit("Status Message: ", 1)[-1]
    return (f"node {node[1]}: " if node else "") + tail[:240]


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


def check_file(path, model, batch_size: Optional[int] = None, atol: float = 1e-3, what: str = "the ONNX file") -> dict:
    """Load `path` in ONNX Runtime, run it and `model` (PyTorch) on one example input of the size its graph takes, and
    return the comparison. Refused (ValueError, one line naming `what` and the path) when the file is no ONNX model
    (`load_export`), takes another input than a `pixel_values` batch this model runs at, has outputs the model lacks,
    ONNX Runtime cannot load it, an output differs by more than `atol` (relative to its scale) or a classifier's
    top-1 differs."""
    facts = graph_facts(load_export(path, what))
    vision = _vision_config(model.config)
    channels = getattr(vision, "num_channels", 3)
    if facts["input"] != INPUT_NAME or facts["channels"] != channels or not isinstance(facts["image_size"], int):
        raise ValueError(f"{what} {path} takes {facts['input']} of shape ({facts['batch']}, {facts['channels']}, "
                         f"{facts['image_size']}) but {type(model).__name__} takes {INPUT_NAME} (batch, {channels}, S, "
                         "S): export it from this model with `pitome-hf export`.")
    size = facts["image_size"]
    try:
        _check_image_size(model, size, 1)
    except ValueError as error:
        raise ValueError(f"{what} {path} was exported for {size} px images, another input size than this model's: "
                         f"{error}") from None
    batch = facts["batch"] if isinstance(facts["batch"], int) else (batch_size or 2)
    x = example_input(model.config, batch, size, seed=1)
    with torch.inference_mode():
        reference = model.eval()(pixel_values=x, return_dict=True)
    lacking = [n for n in facts["outputs"] if not isinstance(getattr(reference, n, None), torch.Tensor)]
    if lacking:
        raise ValueError(f"{what} {path} has the outputs {facts['outputs']}, but {type(model).__name__} returns no "
                         f"{', '.join(lacking)}: export it from this model with `pitome-hf export`.")
    try:
        sess = session(path)
        got = run_session(sess, x.numpy())
    except Exception as error:  # ONNX Runtime cannot load or run it (a graph cut short, an operator it lacks)
        raise ValueError(f"{what} {path}: ONNX Runtime cannot run it ({_ort_reason(error)}); re-export it from this "
                         "model with `pitome-hf export`.") from None
    names = [o.name for o in sess.get_outputs()]
    result = compare(dict(zip(names, got)), {n: getattr(reference, n).numpy() for n in names})
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
