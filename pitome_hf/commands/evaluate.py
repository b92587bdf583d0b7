"""Evaluate a model under none / ToMe / PiToMe merging at several keep ratios: metric, GFLOPs, images/s, memory.

    pitome-hf evaluate                                  # the embedded default (Fashion-MNIST ViT), all methods
    pitome-hf evaluate --presets authors-deit --keep-ratios 0.9   # add the authors' DeiT configuration
    pitome-hf evaluate --model DIR_OR_ID --dataset DIR_OR_ID --split validation --keep-ratios 0.95 0.9 0.85
    pitome-hf evaluate --task zero-shot-image-classification --model openai/clip-vit-base-patch16 --dataset ...
    pitome-hf evaluate --task image-text-retrieval --model CLIP --dataset ... --text-column caption
    pitome-hf evaluate --task vqa --model llava-hf/llava-1.5-7b-hf --dataset ... --label-column answers
    pitome-hf evaluate --task vqa --model Qwen/Qwen2.5-VL-3B-Instruct --dataset ... --visual-tokens 64 128 192 \
        --methods none pitome tome --visual-selections merge visionzip      # equal visual-token counts per row
    accelerate launch --num_processes 2 -m pitome_hf.cli evaluate ...   # data split across processes

Tasks (pitome_hf.evaluation.tasks): image-classification (ViT/DeiT), zero-shot-image-classification and
image-text-retrieval (CLIP), vqa (the vision-language families: LLaVA-1.5, Qwen2.5-VL, ...). Vision-language
models reducing at the language model's input also sweep `--visual-tokens` (visual tokens per image; rows next to the
keep-ratio rows, which are left out when only budgets are given) and `--visual-selections` (VisionZip-style rows).

Metrics go through `evaluate` modules shipped with the package (loaded by path, offline). GFLOPs come from the
analytic count in pitome_hf.flops; images/s times the model forward only, after warm-up, with device
synchronisation. Writes results.json (read by the model card code), results.csv, results.md and a plot.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pitome_hf.evaluation.data import DataSpec
from pitome_hf.evaluation.evaluate import DEFAULT_KEEP_RATIOS, DEFAULT_METHODS, evaluate_model
from pitome_hf.evaluation.report import markdown_table, write_report
from pitome_hf.evaluation.tasks import TASKS
# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merging import METHODS
from pitome_hf.options import (
    SWEPT, add_batch_argument, add_device_arguments, add_merge_arguments, add_output_argument,
    add_visual_sweep_arguments, merge_arguments,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitome-hf evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint folder or a Hub id (org/name), stock or PiToMe "
                        "(default: the embedded Fashion-MNIST ViT)")
    parser.add_argument("--dataset", default=None, help="datasets Hub id, folder (imagefolder or parquet), "
                        "parquet/csv/json file or .npz (default: the embedded Fashion-MNIST test split)")
    parser.add_argument("--split", default=None, help="split of a Hub id or folder dataset; refused for a single file, "
                        "which holds one split (default: test; many Hub datasets call theirs 'validation')")
    parser.add_argument("--image-column", default=None, help="(default: image)")
    parser.add_argument("--label-column", default=None,
                        help="class label (classification; default label) or answers (vqa; default answers)")
    parser.add_argument("--text-column", default=None,
                        help="captions (image-text-retrieval; default caption) or questions (vqa; default question)")
    parser.add_argument("--task", default="image-classification", choices=TASKS, help="(default: %(default)s)")
    parser.add_argument("--prompt", default=None,
                        help="zero-shot class template (default 'a photo of a {}.') or VQA prompt with <image> and {}")
    parser.add_argument("--max-new-tokens", type=int, default=10, help="vqa: answer length limit (default: "
                        "%(default)s)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS,
                        help="selections to run at every keep ratio (default: %(default)s)")
    parser.add_argument("--presets", nargs="+", default=[], metavar="PRESET",
                        help="also run these named configurations at every keep ratio: paper, authors-deit, "
                        "authors-mae, authors-bert, authors-blip2 (see MERGE_PRESETS)")
    parser.add_argument("--keep-ratios", nargs="+", type=float, default=None,
                        help=f"(default: {list(DEFAULT_KEEP_RATIOS)}; none when --visual-tokens is given)")
    add_device_arguments(parser, "cpu, cuda, cuda:N or mps; one this machine lacks is refused (default: cuda when "
                         "available, else cpu; the report records the device used)", checkpoint=True)
    add_batch_argument(parser, 64, "samples per forward")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples (default: all)")
    add_output_argument(parser, "folder for results.json/.csv/.md/.png and the rows.jsonl journal, checked before "
                        "the sweep", default="out/evaluate")
    parser.add_argument("--compile", action="store_true", help="run every configuration through torch.compile "
                        "(default: eager)")
    parser.add_argument("--labels-by-id", action="store_true", help="image-classification: read dataset label k as "
                        "the model's label k even when the dataset's class names are not the model's (default: classes "
                        "are matched by name, and a dataset naming classes the model lacks is refused)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines")
    parser.add_argument("--no-resume", action="store_true", help="measure every row again, even those the folder's "
                        "rows.jsonl already holds for the same model files, data and settings")
    add_visual_sweep_arguments(parser, (), selections=["merge"])
    add_merge_arguments(parser, exclude=SWEPT, title="merge settings of every merged row")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.keep_ratios is None:
        args.keep_ratios = [] if args.visual_budgets else list(DEFAULT_KEEP_RATIOS)
    start = time.perf_counter()
    report = evaluate_model(
        model=args.model,
        data=DataSpec(args.dataset, args.split, args.image_column, args.label_column, args.text_column),
        task=args.task,
        methods=args.methods,
        keep_ratios=args.keep_ratios,
        presets=args.presets,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        out_dir=Path(args.output),
        resume=not args.no_resume,
        compile=args.compile,
        labels_by_id=args.labels_by_id,
        merge_settings=merge_arguments(args),
        visual_tokens=args.visual_budgets,
        visual_selections=args.visual_selections,
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        paths = write_report(report, Path(args.output))
        print(f"{report['model']} on {report['dataset']['path']} ({report['num_samples']} samples, "
              f"{report['device']}, {report['dtype']}, batch {report['batch_size']})")
        print(markdown_table(report))
        print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
