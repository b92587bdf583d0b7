"""Convert a stock checkpoint (folder or Hub id) into a PiToMe checkpoint folder that loads with remote code alone.

    pitome-hf convert google/vit-base-patch16-224 --method pitome --keep-ratio 0.9 --output vit-b16-pitome
    pitome-hf convert facebook/deit-small-patch16-224 --preset authors-deit --keep-ratio 0.9 --output deit-s-pitome
    pitome-hf convert ./my-vit --method pitome_bsm pitome pitome pitome --keep-ratio 0.9 --output my-vit-pitome

The family and task class come from the base config's `architectures` (else its model_type); every weight must
load (zero missing, zero unexpected keys) or nothing is written. An existing local path is always read as a folder
(the Hub is never asked about it); anything else is a Hub id. The base's tokenizer and processor files are copied
when it has them; none are invented when it does not. The folder is written next to the output under a temporary
name and renamed into place at the end, so a failure never leaves a half-written output; temporary folders left by a
killed run are removed by the next run. An --output that is, holds or sits inside the input, that is a symbolic link,
or (even with --force) a non-empty folder other than a PiToMe checkpoint (one convert wrote: config.json with a PiToMe
model_type, and weights) is refused before anything is loaded. A sharded safetensors base (or one above 1 GiB) is not
loaded at all: its headers are checked against the PiToMe model built on the meta device (the same refusals), and its
weight files are copied as they are beside the new config and code, so the memory needed does not grow with the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import transformers

from pitome_hf.checkpoints import (  # noqa: F401 (the helpers moved to pitome_hf.checkpoints; still importable here)
    CHECKPOINT_OUTPUT, HUB_ID, PREPROCESSING_FILES, OutputKind, check_output, copy_preprocessing, load_cleanly,
    processor_parts, remove_stale_staging, resolve_base, staged_folder, staging_path,
)
from pitome_hf.families import entry_for_config_dict, family_of


def _base_license(base: str, local: bool) -> Optional[str]:
    """The license in the base's model card: README.md of a local folder (never the Hub for a local folder), or the
    Hub card of a Hub id (None when offline or missing)."""
    from huggingface_hub import ModelCard

    try:
        if local:
            readme = Path(base) / "README.md"
            return ModelCard.load(str(readme)).data.license if readme.is_file() else None
        return ModelCard.load(base).data.license
    except Exception:  # no card, offline, or unreadable: the license stays unknown
        return None


def _save_family_processor(processor_class: type, config, parts: Optional[dict], folder: Path) -> list[str]:
    """Save the family's PiToMe processor (built from the base's sub-processors `parts`, see `processor_parts`, with
    the model's merge settings) when the base has them; returns the files written, or [] when it has not."""
    if parts is None:
        return []
    before = set(folder.iterdir()) if folder.exists() else set()
    processor_class.from_model_config(config, **parts).save_pretrained(folder)
    return sorted(p.name for p in set(folder.iterdir()) - before)


STREAM_MIN_BYTES = 1 << 30  # safetensors weights above 1 GiB (or in shards) are copied file by file, never loaded


def base_weight_files(base: str, local: bool) -> list:
    """The base's .safetensors weight files as `from_pretrained` reads them (model.safetensors, else the index and
    every shard it names; a Hub id's from the local cache, downloaded when missing); [] when it has none (a
    pytorch_model.bin checkpoint)."""
    from pitome_hf.commands.load_check import SAFE_INDEX, SAFE_WEIGHTS, read_index, weight_files

    if local:
        files = weight_files(Path(base))
        return files + [Path(base) / SAFE_INDEX] if files and files[0].name != SAFE_WEIGHTS else files
    from transformers.utils import cached_file

    single = cached_file(base, SAFE_WEIGHTS, _raise_exceptions_for_missing_entries=False)
    if single:
        return [Path(single)]
    index = cached_file(base, SAFE_INDEX, _raise_exceptions_for_missing_entries=False)
    if not index:
        return []
    names = sorted(set(read_index(Path(index).parent).values()))
    return [Path(cached_file(base, name)) for name in names] + [Path(index)]


def _stream(base: str, files: list, stream: Optional[bool]) -> bool:
    """Whether convert copies the base's weight files instead of loading them: `stream` when given, else when the
    base's weights are .safetensors shards or more than STREAM_MIN_BYTES."""
    if stream is not None:
        if stream and not files:
            raise ValueError(f"{base} has no .safetensors weights to copy file by file (stream=True).")
        return stream
    return bool(files) and (len(files) > 1 or sum(p.stat().st_size for p in files) > STREAM_MIN_BYTES)


def streamed_model(model_class, base: str, files: list, **settings):
    """The PiToMe model of `base` with `settings`, built on the meta device (no weight is read), after checking
    every key, shape and dtype of the base's safetensors headers against it through `from_pretrained`'s own key
    renaming (pitome_hf.commands.load_check.check_keys): refused (ValueError, nothing written) when a weight is
    missing, unexpected or mismatched, as `load_cleanly`; a weight file that cannot be read is named (RuntimeError)."""
    import torch

    from pitome_hf.commands.load_check import FolderError, check_keys, read_headers

    config, unused = model_class.config_class.from_pretrained(base, return_unused_kwargs=True, **settings)
    try:
        headers = read_headers(files[0].parent)
    except FolderError as error:
        raise RuntimeError(f"{error} Nothing was written.") from None
    bad, dtypes, _ = check_keys(model_class, config, headers)
    problems = {**bad, **({"dtype": dtypes["refused"]} if dtypes.get("refused") else {})}
    if problems:
        raise ValueError(f"{base} did not load cleanly into {model_class.__name__}: {problems}. Nothing was written.")
    floating = [d for _, _, d in headers.values() if d in ("F32", "BF16", "F16", "F64")]
    if getattr(config, "dtype", None) is None and floating:  # what from_pretrained's dtype="auto" would load in
        config.dtype = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}[floating[0]]
    with torch.device("meta"):
        return model_class(config, **unused)


def _save_streamed(model, base: str, files: list, folder: Path) -> None:
    """What `save_pretrained` writes, with the base's weight files copied as they are (one file at a time, by the
    kernel: no tensor is read): the PiToMe models hold the stock parameter names, so the base's tensors are theirs.
    The code files and config (architectures, dtype, auto_map), and the base's generation config when the model
    generates (else one made from the config, as save_pretrained would)."""
    import shutil

    from transformers import GenerationConfig
    from transformers.dynamic_module_utils import custom_object_save

    dtype = model.config.dtype
    dtype = dtype if isinstance(dtype, str) or dtype is None else str(dtype).split(".")[1]
    for config in [model.config] + [getattr(model.config, k, None) for k in getattr(model.config, "sub_configs", {})]:
        if config is not None:  # from_pretrained sets the dtype on every sub-config, and save_pretrained writes it
            config.dtype = dtype
    model.config.architectures = [type(model).__name__]
    custom_object_save(model, folder, config=model.config)
    model.config.save_pretrained(folder)
    if model.can_generate():
        try:
            generation = GenerationConfig.from_pretrained(base)
        except OSError:  # the base has none: the one save_pretrained writes
            generation = GenerationConfig.from_model_config(model.config)
        generation.save_pretrained(folder)
    for path in files:
        shutil.copyfile(path, folder / path.name)  # follows a Hub cache link to its blob


def convert_checkpoint(base: str, output, *, force: bool = False, base_model: Optional[str] = None,
                       stream: Optional[bool] = None, **settings) -> Path:
    """Write the PiToMe variant of `base` with the merge `settings` to `output`; returns the output path.

    `settings` are merge settings (see `MergeConfigMixin`), `preset=NAME` for a named configuration, and for ViT
    `classifier_pooling="mean"` (MAE classifiers). `base_model`: the Hub id to name in the model card (default: the
    base when it is a Hub id; a local folder names none). `stream`: copy the base's .safetensors files as they are
    instead of loading and saving the model (default: when they are shards or more than STREAM_MIN_BYTES), after
    checking their headers against the PiToMe model on the meta device; the memory needed then does not grow with
    the model."""
    if base_model is not None and (not HUB_ID.match(base_model) or Path(base_model).expanduser().exists()):
        raise ValueError(f"--base-model {base_model!r} must be a Hub model id (org/name), not a local path or another "
                         "string: the model card links it.")
    base, local = resolve_base(str(base))
    output = check_output(output, base if local else None, force)
    if "preset" in settings:
        settings["merge_preset"] = settings.pop("preset")
    config_dict, _ = transformers.PretrainedConfig.get_config_dict(base)
    entry = entry_for_config_dict(config_dict)
    model_class = entry.pitome
    if "classifier_pooling" in settings and not hasattr(model_class.config_class, "classifier_pooling"):
        raise ValueError(f"classifier_pooling applies to ViT classifiers; {model_class.__name__} has no such option.")
    files = base_weight_files(base, local)
    streaming = _stream(base, files, stream)
    model = streamed_model(model_class, base, files, **settings) if streaming else load_cleanly(model_class, base,
                                                                                             **settings)
    hub_id = base_model or (None if local else base)
    if hub_id:
        model.config.pitome_base_model = hub_id
    license = _base_license(base, local)
    if license:
        model.config.pitome_base_license = license
    processor_class = family_of(entry.config_class.model_type).processor
    parts = processor_parts(processor_class, base) if processor_class is not None else None  # refuses before writing
    with staged_folder(output) as staging:
        copied = []
        if processor_class is not None:  # e.g. LLaVA: a PiToMe processor emitting the merged image-token count
            copied = _save_family_processor(processor_class, model.config, parts, staging)
        if not copied:
            model.config.auto_map.pop("AutoProcessor", None)  # no processor to load: do not name one
        if streaming:
            _save_streamed(model, base, files, staging)
        else:
            model.save_pretrained(staging)
        copied += copy_preprocessing(base, local, staging, skip=set(copied))
        if not copied:
            print(f"note: {base} has no tokenizer or processor files; none were written (add the base's own).")
        json.loads((staging / "config.json").read_text())  # written and readable
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from pitome_hf.options import add_merge_arguments, add_output_argument, merge_arguments

    parser.add_argument("base", help="stock checkpoint: Hub id (org/name) or an existing folder")
    add_output_argument(parser, "folder to write (refused if it exists and is not empty, is a symbolic link, or is, "
                        "holds or sits inside the input folder)", required=True)
    parser.add_argument("--classifier-pooling", choices=["cls", "mean"], default=None,
                        help="ViT classifiers: 'mean' for MAE checkpoints (size-weighted global pool)")
    parser.add_argument("--base-model", default=None, help="Hub id the model card names as base (default: the base "
                        "when it is a Hub id)")
    parser.add_argument("--force", action="store_true", help="replace an existing PiToMe checkpoint folder (one "
                        "convert wrote: config.json with a PiToMe model_type, and weights) at --output; never the "
                        "input, never any other non-empty folder")
    add_merge_arguments(parser, aliases=True, title="merge settings (unset: the base's own, or the config's defaults)")
    args = parser.parse_args(argv)
    settings = merge_arguments(args)
    if args.classifier_pooling is not None:
        settings["classifier_pooling"] = args.classifier_pooling
    out = convert_checkpoint(args.base, args.output, force=args.force, base_model=args.base_model, **settings)
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
