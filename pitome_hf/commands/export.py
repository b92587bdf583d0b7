"""Export a PiToMe / ToMe vision model to ONNX for ONNX Runtime and optimum: a graph for a fixed input size, any batch
(or a fixed one with --batch-size).

    pitome-hf export default --output fmnist-onnx --keep-ratio 0.9
    pitome-hf export google/vit-base-patch16-224 --output vit-onnx --merge-method tome --keep-ratio 0.9
    pitome-hf export ./dinov2-folder --output dinov2-onnx --image-size 224 --batch-size 64 --keep-ratio 0.75

MODEL is a checkpoint folder or Hub id (stock or PiToMe; the family and class come from its config, as in `convert`),
or `default` for the embedded Fashion-MNIST ViT. Every merge field is a flag under its own name; unset ones keep the
checkpoint's own settings. The output folder holds model.onnx (inputs `pixel_values`, outputs `logits`, or
`last_hidden_state` / `pooler_output` / `image_embeds`; the merge settings and token schedule in its metadata_props),
config.json and the base's preprocessing files, laid out as optimum's exports are: config.json names the stock
model_type and class and has no auto_map (the merge settings stay in it as fields), so stock `AutoConfig` and
optimum's `ORTModelFor...` classes load the folder without remote code. The batch axis is dynamic unless
--batch-size N asks for a static graph of N images. Before anything is written the graph passes `onnx.checker` and ONNX
Runtime's outputs are compared with PyTorch's on an example batch; the folder is written under a temporary name and
renamed into place, so a failure leaves nothing (and files left by a killed export are removed by the next one);
--force replaces only an earlier export folder (model.onnx, onnx_export.json and nothing export does not write),
never another folder. The opset, batch and input size recorded in the metadata and onnx_export.json are read back
from the written graph; an opset outside the exporter's range (18 to 25) is refused. Text models (BERT: per-row
budgets from padding) and models that take text (CLIPModel, SiglipModel, LLaVA) are refused, naming what to export
instead. Needs `pip install "pitome_hf[onnx]"`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

DEFAULT_NAME = "default"
EXPORT_FILES = ("model.onnx", "onnx_export.json", "config.json")  # and the base's preprocessing files


def _not_an_export(folder: Path) -> Optional[str]:
    """Why `folder` is not an export folder (model.onnx and onnx_export.json, and nothing export does not write), or
    None."""
    from pitome_hf.checkpoints import PREPROCESSING_FILES

    names = {p.name for p in folder.iterdir()}
    missing = [n for n in ("model.onnx", "onnx_export.json") if n not in names]
    if missing:
        return f"it has no {' or '.join(missing)}"
    foreign = sorted(names - set(EXPORT_FILES) - set(PREPROCESSING_FILES))
    if foreign:
        shown = ", ".join(foreign[:4]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 4 else "")
        return f"it holds {shown}, which export does not write"
    return None


def _output_kind():
    from pitome_hf.checkpoints import OutputKind

    return OutputKind("an export folder (as `pitome-hf export` writes: model.onnx, onnx_export.json, config.json and "
                      "preprocessing files)", _not_an_export)


def load_model(base: str, **settings):
    """(model, base folder or id, local) for MODEL: `default` (the embedded ViT) or a folder / Hub id. A checkpoint
    of a class that export does not take is refused from its config (ValueError naming what export takes), before
    any weight is read."""
    import transformers

    from pitome_hf.checkpoints import load_cleanly, resolve_base
    from pitome_hf.deployment.onnx import export_refusal, unsupported
    from pitome_hf.families import entry_for_config_dict

    if base == DEFAULT_NAME and not Path(base).exists():
        from pitome_hf.paths import DEFAULT_MODEL

        base = str(DEFAULT_MODEL)
    base, local = resolve_base(str(base))
    config_dict, _ = transformers.PretrainedConfig.get_config_dict(base)
    try:
        entry = entry_for_config_dict(config_dict)
    except ValueError:
        raise ValueError(unsupported(f"{base} (a {config_dict.get('model_type')!r} model, architectures "
                                     f"{config_dict.get('architectures')})")) from None
    refusal = export_refusal(entry, next(iter(config_dict.get("architectures") or []), entry.stock.__name__))
    if refusal:
        raise ValueError(refusal)
    model = load_cleanly(entry.pitome, base, **settings)
    return model.eval(), base, local


def export_folder(base: str, output, *, batch_size: Optional[int] = None, image_size=None,
                  dynamic_batch: Optional[bool] = None, opset=None, force: bool = False, **settings) -> dict:
    """Write the ONNX export of `base` with merge `settings` to the folder `output`; returns export_onnx's info.
    The batch is dynamic unless `batch_size` is given (a static graph of that many images); `dynamic_batch=True` with
    a `batch_size` makes it dynamic, traced on that many. config.json is `stock_config_dict` (stock identity, merge
    fields kept). `force` replaces an earlier export folder only (see `check_output`): never a folder export did not
    write."""
    from pitome_hf.checkpoints import copy_preprocessing, check_output, staged_folder
    from pitome_hf.deployment.onnx import DEFAULT_OPSET, check_opset, export_onnx, require_onnx, stock_config_dict

    require_onnx()
    if dynamic_batch is None:
        dynamic_batch = batch_size is None
    batch_size = 2 if batch_size is None else batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be an integer >= 1.")
    if image_size is not None and image_size < 1:
        raise ValueError(f"--image-size {image_size}: must be a positive number of pixels.")
    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    local_input = base if Path(base).expanduser().exists() else None
    output = check_output(output, local_input, force, _output_kind())
    model, base, local = load_model(base, **settings)
    with staged_folder(output) as staging:
        info = export_onnx(model, staging / "model.onnx", batch_size=batch_size, image_size=image_size,
                           dynamic_batch=dynamic_batch, opset=opset)
        (staging / "config.json").write_text(json.dumps(stock_config_dict(model), indent=2, sort_keys=True) + "\n")
        copied = copy_preprocessing(base, local, staging)
        (staging / "onnx_export.json").write_text(json.dumps(  # what the written graph holds (export_onnx's facts)
            {k: info[k] for k in ("inputs", "outputs", "batch_size", "image_size", "opset", "metadata",
                                  "max_abs_diff") if k in info} | {"top1_agreement": info.get("top1_agreement")},
            indent=2) + "\n")
    info["path"] = str(output / "model.onnx")
    info["copied"] = copied
    return info


def main(argv=None) -> int:
    from pitome_hf.options import add_batch_argument, add_merge_arguments, add_output_argument, merge_arguments
    from pitome_hf.deployment.onnx import DEFAULT_OPSET, opset_range

    parser = argparse.ArgumentParser(prog="pitome-hf export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder or Hub id (stock or PiToMe), or 'default' (the embedded ViT)")
    add_output_argument(parser, "folder to write (refused if it exists and is not empty, unless --force and it is an "
                        "earlier export folder)", required=True)
    add_batch_argument(parser, None, "a static graph for this many images per run (default: none, a dynamic "
                       "batch, as optimum's pipelines need for batch_size > 1)")
    parser.add_argument("--dynamic-batch", action="store_true", default=None, help="any batch size (the batch axis "
                        "symbolic, every other shape static): the default; with --batch-size N, traced on N images")
    parser.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the config's "
                        "image_size; DINOv2 also takes other multiples of its patch size)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset, %d to %d (the exporter's range; "
                        "default: %d); the metadata records the opset of the written graph" % (*opset_range(), DEFAULT_OPSET))
    parser.add_argument("--force", action="store_true", help="replace an earlier export folder at --output (model.onnx, "
                        "onnx_export.json and nothing export does not write); never any other folder")
    add_merge_arguments(parser, title="merge settings (unset: the checkpoint's own, or the config's defaults)")
    args = parser.parse_args(argv)
    info = export_folder(args.model, args.output, batch_size=args.batch_size, image_size=args.image_size,
                         dynamic_batch=args.dynamic_batch, opset=args.opset, force=args.force,
                         **merge_arguments(args))
    meta = info["metadata"]
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in info["max_abs_diff"].items())
    top1 = f", top-1 agreement {info['top1_agreement']:.3f}" if "top1_agreement" in info else ""
    print(f"wrote {info['path']}: {meta['pitome_hf.model_class']}, {meta['pitome_hf.input']} -> "
          f"{', '.join(info['outputs'])}; merge_method {meta['pitome_hf.merge_method']}, keep_ratio "
          f"{meta['pitome_hf.keep_ratio']}, tokens per layer {meta['pitome_hf.token_schedule']}")
    print(f"onnx.checker passed; ONNX Runtime vs PyTorch on an example batch: max abs diff {diffs}{top1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
