"""Convert a stock checkpoint (folder or Hub id) into a PiToMe checkpoint folder that loads with remote code alone.

    pitome-hf convert google/vit-base-patch16-224 --method pitome --keep-ratio 0.9 --output vit-b16-pitome

The family and task class come from the base config's `architectures` (else its model_type); every weight must
load (zero missing, zero unexpected keys) or nothing is written. The folder is written next to the output under a
temporary name and renamed into place at the end, so a failure never leaves a half-written output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path
from typing import Optional

import transformers

from .convert import _FAMILIES


def pitome_class_for(config_dict: dict) -> type:
    """The PiToMe model class for a base config (stock or PiToMe), or a ValueError naming the supported ones."""
    by_name = {stock.__name__: pitome for stock, (pitome, _) in _FAMILIES.items()}
    for name in config_dict.get("architectures") or []:
        if name in by_name:
            return by_name[name]
    model_type = config_dict.get("model_type")
    default = transformers.models.auto.modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
    if default in by_name:
        return by_name[default]
    for pitome_class, config_class in _FAMILIES.values():  # a PiToMe folder: its own base class
        if config_class.model_type == model_type and pitome_class.__name__ in (config_dict.get("architectures") or []):
            return pitome_class
    supported = sorted({stock.__name__ for stock in _FAMILIES if not stock.__name__.startswith("PiToMe")})
    raise ValueError(
        f"cannot convert a {model_type!r} model (architectures {config_dict.get('architectures')}): supported base "
        f"architectures are {', '.join(supported)}."
    )


def _base_license(base: str) -> Optional[str]:
    try:
        from huggingface_hub import ModelCard

        path = Path(base) / "README.md"
        card = ModelCard.load(str(path) if path.is_file() else base)
        return card.data.license
    except Exception:  # no card, offline, or unreadable: the license stays unknown
        return None


def _save_preprocessing(base: str, folder: Path) -> list[str]:
    """Copy the processor / image processor / tokenizer of the base next to the model; returns what was saved."""
    saved = []
    for auto in (transformers.AutoProcessor, transformers.AutoImageProcessor, transformers.AutoTokenizer):
        try:
            auto.from_pretrained(base).save_pretrained(folder)
            saved.append(auto.__name__)
            if auto is transformers.AutoProcessor:
                break
        except Exception:  # the base has no such component
            continue
    return saved


def convert_checkpoint(base: str, output, *, force: bool = False, **settings) -> Path:
    """Write the PiToMe variant of `base` with the merge `settings` to `output`; returns the output path."""
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not force:
        raise ValueError(f"{output} exists and is not empty; pass force=True (--force) to replace it.")
    config_dict, _ = transformers.PretrainedConfig.get_config_dict(str(base))
    model_class = pitome_class_for(config_dict)
    model, info = model_class.from_pretrained(str(base), output_loading_info=True, **settings)
    problems = {k: sorted(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if problems:
        raise ValueError(f"{base} did not load cleanly into {model_class.__name__}: {problems}. Nothing was written.")
    model.config.pitome_base_model = str(base) if not Path(str(base)).exists() else Path(str(base)).name
    license = _base_license(str(base))
    if license:
        model.config.pitome_base_license = license
    staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(staging)
        _save_preprocessing(str(base), staging)
        json.loads((staging / "config.json").read_text())  # written and readable
        if output.exists():
            old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old)
        else:
            staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pitome-hf convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="stock checkpoint: Hub id or folder")
    parser.add_argument("--output", required=True)
    parser.add_argument("--method", default="pitome", choices=["pitome", "tome", "none"])
    parser.add_argument("--keep-ratio", type=float, default=0.9)
    parser.add_argument("--merge-r", type=int, nargs="+", default=None, help="one int, or one per layer")
    parser.add_argument("--merge-layers", type=int, nargs="+", default=None)
    parser.add_argument("--margin", type=float, default=None)
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--energy", choices=["exp", "elu", "gaussian"], default=None)
    parser.add_argument("--no-proportional-attention", action="store_true")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    args = parser.parse_args(argv)
    settings = {"merge_method": args.method, "keep_ratio": args.keep_ratio}
    if args.merge_r is not None:
        settings["merge_r"] = args.merge_r[0] if len(args.merge_r) == 1 else args.merge_r
    for name in ("merge_layers", "margin", "alpha", "energy"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.no_proportional_attention:
        settings["proportional_attention"] = False
    out = convert_checkpoint(args.base, args.output, force=args.force, **settings)
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
