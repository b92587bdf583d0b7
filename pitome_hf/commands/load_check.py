"""The load check `push` runs on a checkpoint too big for the full one, in memory that does not grow with the depth.

`verify_loads` (push.py) runs this file as a script in a fresh Python process where pitome_hf cannot be imported (an
empty HF_HOME, offline), as it runs the full check on a small folder; it imports torch, transformers and safetensors
only. What it checks, without holding the weights:

1. Remote code: the config and model classes load from the folder's own .py files (`trust_remote_code`).
2. The files: every .safetensors file transformers would read (model.safetensors, else the shards that
   model.safetensors.index.json names) opens, its header agrees with its size (safetensors refuses a truncated file),
   and the index agrees with the shards (no key listed in a file that lacks it, no key a shard holds that the index
   does not list, no key in two shards, no shard missing).
3. The keys: the model is built on the meta device and `from_pretrained` runs on it with a state dict of empty meta
   tensors of the headers' shapes and dtypes, so transformers' own key renaming and conversions (the checkpoint
   conversion mappings the PiToMe classes register) decide what is missing, unexpected or mismatched, exactly as
   when the weights are loaded; then each header dtype is compared with the tensor the model holds (a float
   tensor for an integer one, or the reverse, is refused; a float cast, e.g. float32 weights into a bfloat16 model,
   is reported, as `from_pretrained` accepts it).
4. A forward on the dummy input, with finite outputs, on a model whose layer stacks (the ModuleLists of the classes
   in `_no_split_modules`) are built with real layers only at their first KEEP_LAYERS positions (and at the first
   layer of each other structure, e.g. Qwen3.5's full-attention layers among linear-attention ones) and empty
   placeholders elsewhere, and loaded from the files by `from_pretrained`, which then reads only the tensors that
   model holds (the embeddings, heads, those layers, everything outside the stacks); then each placeholder gets a
   stand-in sharing the weights of a kept layer of the same structure, under its own layer index, so the forward
   passes every position: the merge schedule, the token counts and the hidden states a vision-language model reads
   are those of the whole model.

Not checked on this path: the values of the weights of the layers not kept (a NaN
there, or bytes corrupted inside a file of the right size, go unnoticed: no forward uses them); their keys, shapes and
dtypes are checked. A checkpoint without .safetensors files (pytorch_model.bin) gets the full check instead.

    python load_check.py FOLDER AUTO_CLASS INPUTS.pt [--keep-layers N]

prints one JSON object on its last line (what was checked, and `problems`: a list of lines, empty when it passed);
a folder it cannot read ends the process with one line on stderr naming the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEEP_LAYERS = 2  # layers kept in each cut stack: two, so that a merge feeds a second layer (--keep-layers N)
SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
          "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class FolderError(Exception):
    """The folder's weight files cannot be read as transformers would read them: one line naming the file."""


def weight_files(folder: Path) -> list:
    """The .safetensors files `from_pretrained` reads from `folder`, in transformers' order of preference:
    model.safetensors, else every shard model.safetensors.index.json names; [] when there is neither."""
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS]
    if not (folder / SAFE_INDEX).is_file():
        return []
    return [folder / name for name in sorted(set(read_index(folder).values()))]


def read_index(folder: Path) -> dict:
    """{key: shard file name} of the folder's model.safetensors.index.json (FolderError when it is not one)."""
    path = folder / SAFE_INDEX
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
        assert isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
        raise FolderError(f"{path} is not a safetensors index (a JSON object with a weight_map of key -> file); "
                          "re-create the folder with `pitome-hf convert`.") from None
    return weight_map


def read_headers(folder: Path) -> dict:
    """{key: (file name, shape, dtype name)} from the headers of the weight files (no tensor is read), after checking
    that each file opens and that the index, if any, agrees with the shards; FolderError names the first problem."""
    from safetensors import safe_open

    files = weight_files(folder)
    if not files:
        raise FolderError(f"{folder} has no {SAFE_WEIGHTS} and no {SAFE_INDEX}.")
    index = read_index(folder) if files[0].name != SAFE_WEIGHTS else None
    headers = {}
    for path in files:
        if not path.is_file():
            raise FolderError(f"{folder / SAFE_INDEX} names {path.name}, which is not in the folder; copy the shard "
                              "back or re-create the folder with `pitome-hf convert`.")
        try:
            with safe_open(str(path), framework="pt") as weights:
                for key in weights.keys():
                    part = weights.get_slice(key)
                    if key in headers:
                        raise FolderError(f"{key} is in both {headers[key][0]} and {path.name}; re-create the "
                                          "folder with `pitome-hf convert`.")
                    headers[key] = (path.name, tuple(part.get_shape()), part.get_dtype())
        except FolderError:
            raise
        except Exception as error:
            raise FolderError(f"{path} cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:160]}): "
                              "a truncated or corrupt weights file; replace it with the checkpoint's own.") from None
    if index is not None:
        misplaced = sorted(k for k, name in index.items() if headers.get(k, (None,))[0] != name)
        unlisted = sorted(set(headers) - set(index))
        if misplaced:
            key = misplaced[0]
            where = f"is in {headers[key][0]}" if key in headers else "is in no shard"
            raise FolderError(f"{folder / SAFE_INDEX} lists {key} in {index[key]}, but it {where} ({len(misplaced)} "
                              "such keys); re-create the folder with `pitome-hf convert`.")
        if unlisted:
            raise FolderError(f"{headers[unlisted[0]][0]} holds {unlisted[0]}, which {SAFE_INDEX} does not list "
                              f"({len(unlisted)} such keys); re-create the folder with `pitome-hf convert`.")
    return headers


def model_class(folder: Path, auto: str):
    """(config, the model class `auto` resolves to) from the folder's own code, as AutoX(trust_remote_code) does."""
    import transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    reference = (getattr(config, "auto_map", None) or {}).get(auto)
    if reference is None:  # not remote code (a stock folder): the Auto class's own mapping
        return config, getattr(transformers, auto)._model_mapping[type(config)]
    return config, get_class_from_dynamic_module(reference, str(folder))


def check_keys(cls, config, headers: dict) -> tuple[dict, dict, object]:
    """({missing/unexpected/mismatched: keys}, {dtype problems and casts}, the meta model) of loading `headers` into
    `cls` on the meta device through `from_pretrained`, which renames and converts the keys as for real weights."""
    import torch

    state = {key: torch.empty(shape, dtype=getattr(torch, DTYPES.get(dtype, "float32")), device="meta")
             for key, (_, shape, dtype) in headers.items()}
    unknown = sorted({dtype for _, _, dtype in headers.values()} - set(DTYPES))
    model, info = cls.from_pretrained(None, config=config, state_dict=state, device_map={"": "meta"},
                                      ignore_mismatched_sizes=True, use_kernels=False, output_loading_info=True)
    bad = {k: sorted(map(str, v)) for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    dtypes = {"unknown": unknown} if unknown else {}
    dtypes.update(_dtype_check(model, headers))
    return bad, dtypes, model


def _dtype_check(model, headers: dict) -> dict:
    """Each header dtype against the tensor the model holds under the renamed key: {"refused": [...]} for a float vs
    non-float mismatch, {"cast": {"F32 -> torch.bfloat16": count}} for float casts; {"skipped": why} when this
    transformers has no key-renaming functions to map the keys with."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError as error:
        return {"skipped": f"no key renaming in this transformers ({error})"}
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    held = model.state_dict()
    refused, cast = [], {}
    for key, (name, _, dtype) in sorted(headers.items()):
        target, _ = rename_source_key(key, renamings, converters, model.base_model_prefix, held)
        if target not in held and key in held:
            target = key
        if target not in held:
            continue  # a key the model does not hold is already reported as unexpected
        want = held[target].dtype
        floating = DTYPES.get(dtype, "").startswith(("float", "bfloat"))
        if floating != want.is_floating_point:
            refused.append(f"{name}: {key} is {dtype}, but the model holds {target} as {want}")
        elif floating and DTYPES.get(dtype) != str(want).removeprefix("torch."):
            cast[f"{dtype} -> {want}"] = cast.get(f"{dtype} -> {want}", 0) + 1
    return {**({"refused": refused} if refused else {}), **({"cast": cast} if cast else {})}


def layer_stacks(model, keep=KEEP_LAYERS) -> list:
    """[(path, ModuleList)] of the model's layer stacks: ModuleLists of more than `keep` modules whose class (or a
    base class) is named in a `_no_split_modules`."""
    import torch

    blocks = set()
    for module in model.modules():
        blocks.update(getattr(module, "_no_split_modules", None) or ())
    stacks = []
    for path, module in model.named_modules():
        if (isinstance(module, torch.nn.ModuleList) and len(module) > keep
                and all(any(k.__name__ in blocks for k in type(layer).__mro__) for layer in module)):
            stacks.append((path, module))
    return stacks


def _structure(layer) -> tuple:
    """What a layer is built of (its modules' names and classes): a stand-in copies a layer of the same structure
    (Qwen3.5's linear-attention and full-attention layers differ)."""
    return tuple((name, type(module).__name__) for name, module in layer.named_modules())


def cut_class(cls, keep=KEEP_LAYERS):
    """A subclass of `cls` under the same name (so transformers finds the same conversion mappings) whose layer
    stacks, once built, hold real layers only at the first `keep` positions and at the first layer of each other
    structure, and empty placeholders elsewhere, so that `from_pretrained` reads only those layers' tensors (the
    others' keys come back as unexpected); `model._pitome_cut` records {path: (structures, positions kept)}."""
    import torch

    class Cut(cls):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            self._pitome_cut = {}
            for path, stack in layer_stacks(self, keep):
                structures = [_structure(layer) for layer in stack]
                kept = sorted(set(range(keep)) | {structures.index(s) for s in structures})
                self._pitome_cut[path] = (structures, kept)
                for i in range(len(stack)):
                    if i not in kept:
                        stack[i] = torch.nn.Module()

    Cut.__name__, Cut.__qualname__, Cut.__module__ = cls.__name__, cls.__qualname__, cls.__module__
    return Cut


LAYER_INDEX_FIELDS = ("layer_idx", "layer_index", "layer_id", "layer_number")


def refill(model) -> None:
    """Put a stand-in at each placeholder of the cut stacks: a copy of a kept layer of the same structure, sharing
    its parameters and buffers (no memory), with its layer-index attributes set to its own position, so that the
    forward runs every position (the merge schedule, the token counts, hidden_states[-k]) with real weights."""
    import copy
    import itertools

    for path, (structures, kept) in model._pitome_cut.items():
        stack = model.get_submodule(path)
        for i in range(len(structures)):
            if i in kept:
                continue
            same = [j for j in kept if structures[j] == structures[i]]
            j = same[i % len(same)]
            source = stack[j]
            shared = {id(t): t for t in itertools.chain(source.parameters(), source.buffers())}
            stand_in = copy.deepcopy(source, memo=shared)
            for module in stand_in.modules():
                for name in LAYER_INDEX_FIELDS:
                    if getattr(module, name, None) == j and isinstance(getattr(module, name), int):
                        setattr(module, name, i)
            stack[i] = stand_in


def check_forward(cls, folder: Path, inputs: dict, keep=KEEP_LAYERS) -> dict:
    """The cut model loaded from the folder with its real weights (none missing or mismatched), refilled with
    stand-ins (`refill`), one forward on `inputs` (floating inputs in the model's dtype, no KV cache):
    {"cut", "bad_keys", "finite", "output_sums"} (the float64 sum of each floating output, for a test to compare with
    the whole model's)."""
    import inspect

    import torch

    model, info = cut_class(cls, keep).from_pretrained(str(folder), output_loading_info=True, use_kernels=False)
    bad = {k: sorted(map(str, v))[:5] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    refill(model)
    dtype = model.dtype
    inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    if "use_cache" in inspect.signature(model.forward).parameters:
        inputs["use_cache"] = False
    with torch.no_grad():
        out = model.eval()(**inputs)
    values = {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    return {"cut": {path: {"layers": len(structures), "loaded": kept}
                    for path, (structures, kept) in model._pitome_cut.items()}, "bad_keys": bad,
            "finite": all(bool(torch.isfinite(v).all()) for v in values.values()),
            "output_sums": {k: float(v.double().sum()) for k, v in values.items()}}


def peak_rss_bytes():
    """This process's peak resident memory (VmHWM of /proc/self/status: reset at exec, unlike ru_maxrss, which keeps
    the forking parent's), or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(folder: Path, auto: str, inputs_path: Path, keep=KEEP_LAYERS) -> dict:
    """Every check above on `folder`; {"problems": [...], ...} (empty problems: it passed)."""
    import torch

    headers = read_headers(folder)
    config, cls = model_class(folder, auto)
    bad, dtypes, meta = check_keys(cls, config, headers)
    result = {"class": cls.__name__, "check": "bounded", "tensors": len(headers),
              "files": sorted({name for name, _, _ in headers.values()}), "dtypes": dtypes, "problems": []}
    del meta
    if bad:
        shown = {k: v[:5] for k, v in bad.items()}
        result["problems"].append(f"does not load every weight ({shown})")
    if dtypes.get("unknown"):
        result["problems"].append(f"holds tensors of dtypes torch cannot read ({', '.join(dtypes['unknown'])})")
    if dtypes.get("refused"):
        result["problems"].append(f"holds a tensor of the wrong kind ({dtypes['refused'][0]}; "
                                  f"{len(dtypes['refused'])} in all)")
    if result["problems"]:
        return result
    forward = check_forward(cls, folder, torch.load(str(inputs_path)), keep)
    result.update(cut=forward["cut"], finite=forward["finite"], output_sums=forward["output_sums"],
                  peak_rss_bytes=peak_rss_bytes())
    if forward["bad_keys"]:
        result["problems"].append(f"does not load every weight of its first layers ({forward['bad_keys']})")
    elif not forward["finite"]:
        result["problems"].append(f"loads, but a forward with the weights of the first {keep} layers of each stack "
                                  "gives non-finite outputs")
    return result


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    keep = KEEP_LAYERS
    if "--keep-layers" in args:
        at = args.index("--keep-layers")
        keep = int(args[at + 1])
        del args[at:at + 2]
    folder, auto, inputs_path = Path(args[0]), args[1], Path(args[2])
    try:
        result = run(folder, auto, inputs_path, keep)
    except FolderError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # this folder's command modules (evaluate.py, export.py, ...) must not shadow libraries
    sys.modules["pitome_hf"] = None  # remote code only, as on a machine without pitome_hf
    raise SystemExit(main())
