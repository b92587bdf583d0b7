"""Command-line flags generated from the merge-field table (one owner: `merge_config.MERGE_FIELD_TABLE`).

Every command that makes or runs a model takes every merge field under the field's own name, underscores as dashes
(`--merge-method`, `--keep-ratio`, `--proportional-attention/--no-proportional-attention`, ...), so a new field is
one row of the table and no command changes. Commands that sweep a field (`--keep-ratios`, `--methods`,
`--presets`) leave that field to their sweep and apply the others to every merged row.
"""

from __future__ import annotations

import argparse

# pitome_hf.modeling is the repository's top-level modeling/ folder (setup.cfg: package_dir)
from pitome_hf.modeling.merge_config import MERGE_FIELD_TABLE, MergeField

ALIASES = {"merge_preset": ("--preset",), "merge_method": ("--method",)}  # short spellings kept for convert
# Fields whose command-line value is one item or one per layer: a single item is given as the item itself.
ONE_OR_PER_LAYER = ("merge_method", "merge_r")
# What the sweeping commands (evaluate, benchmark, fidelity) take through their own sweep options.
# (The vision-language ones also sweep visual_tokens and visual_selection: --visual-tokens, --visual-selections.)
SWEPT = ("merge_method", "keep_ratio", "merge_preset", "merge_r", "visual_tokens", "visual_selection")


def _kwargs(f: MergeField) -> dict:
    default = "" if "default" in f.help else f" (default: {f.default!r})"
    kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.help}{default}".replace("%", "%%"))
    if f.cli_type is bool:
        kw["action"] = argparse.BooleanOptionalAction
        return kw
    if f.per_layer:
        kw["nargs"] = "+"
    if f.choices:
        kw["choices"] = f.choices
        kw["metavar"] = f.name.upper()
        kw["help"] += f"; one of {', '.join(f.choices)}"
    else:
        kw["type"] = f.cli_type
    return kw


DTYPES = ("float32", "bfloat16", "float16")


def add_batch_argument(parser: argparse.ArgumentParser, default, what: str = "images per forward") -> None:
    """`--batch-size` (alias `--batch`), one spelling for every command and script that runs a model: args.batch_size."""
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=default,
                        help=f"{what} (default: %(default)s)")


def add_output_argument(parser: argparse.ArgumentParser, help: str, default=None, required: bool = False) -> None:
    """`--output` (alias `--out`), one spelling for the folder every command writes (a model folder, an export,
    results): args.output."""
    parser.add_argument("--output", "--out", dest="output", default=default, required=required,
                        help=help + (" (default: %(default)s)" if default is not None else ""))


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's, as from_pretrained takes them


def add_device_arguments(parser: argparse.ArgumentParser, device_help: str = "cpu, cuda, cuda:N or mps (default: "
                         "cuda when available, else cpu)", checkpoint: bool = False) -> None:
    """`--device` and `--dtype`, one spelling for every command that runs a model. `checkpoint`: the command loads a
    checkpoint, so --dtype also takes (and defaults to) `auto`, the checkpoint's own dtype, and `--device-map` spreads
    the model over several GPUs through accelerate."""
    parser.add_argument("--device", default=None, help=device_help)
    if not checkpoint:
        parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="(default: %(default)s)")
        return
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: the checkpoint's own, as "
                        "its config.json records it (dtype or torch_dtype; float32 when it names none) "
                        "(default: %(default)s)")
    parser.add_argument("--device-map", default=None, choices=list(DEVICE_MAPS), help="spread the model's layers over "
                        "every visible GPU through accelerate (from_pretrained's device_map), for a model larger than "
                        "one GPU; instead of --device, in one process (no accelerate launch) (default: one device)")


def add_merge_arguments(parser: argparse.ArgumentParser, *, exclude=(), aliases: bool = False,
                        title: str = "merge settings") -> argparse._ArgumentGroup:
    """Add every merge field (but those in `exclude`) as `--field-name`; unset flags stay out of the namespace, so
    the model's own defaults (e.g. BERT's text settings) hold. `aliases` adds the short spellings (--preset,
    --method)."""
    group = parser.add_argument_group(title, "every merge field of the model's config, under its own name")
    for f in MERGE_FIELD_TABLE:
        if f.name in exclude:
            continue
        flags = ["--" + f.name.replace("_", "-"), *(ALIASES.get(f.name, ()) if aliases else ())]
        group.add_argument(*flags, **_kwargs(f))
    return group


def merge_arguments(args: argparse.Namespace) -> dict:
    """The merge fields given on the command line, as config values (validated when they are applied)."""
    values = {}
    for f in MERGE_FIELD_TABLE:
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if f.name in ONE_OR_PER_LAYER and isinstance(value, list) and len(value) == 1:
                value = value[0]
            values[f.name] = value
    return values


def add_sweep_arguments(parser: argparse.ArgumentParser, ratios, methods=("tome", "pitome")) -> None:
    """The sweep options of the benchmarks (one spelling each, as evaluate and fidelity spell theirs), plus every
    other merge field for the merged rows."""
    from pitome_hf.modeling.merging import METHODS

    parser.add_argument("--keep-ratios", nargs="+", type=float, default=list(ratios),
                        help="keep ratios to sweep, each in (0, 1] (default: %(default)s)")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=[m for m in METHODS if m != "none"],
                        help="merge methods compared with the unmerged model (default: %(default)s)")
    add_merge_arguments(parser, exclude=SWEPT, title="merge settings of every merged row")


def check_sweep(keep_ratios, methods=(), presets=()) -> None:
    """A sweep's values, checked once for every command: each keep ratio in the table's range, no value given twice."""
    from pitome_hf.modeling.merge_config import MERGE_FIELD

    for ratio in keep_ratios:
        try:
            MERGE_FIELD["keep_ratio"].validate(ratio)
        except ValueError as error:
            raise ValueError(f"--keep-ratios: {error}") from None
    for flag, values in (("--methods", methods), ("--presets", presets), ("--keep-ratios", [float(r) for r in
                                                                                             keep_ratios])):
        _each_once(flag, list(values))


def _each_once(flag: str, values: list) -> None:
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise ValueError(f"{flag} lists {twice} more than once: give each value once (each row is measured once).")


def sweep_values(args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """The keep ratios and methods of a sweep, checked (`check_sweep`)."""
    check_sweep(args.keep_ratios, args.methods)
    return list(args.keep_ratios), list(args.methods)


def visual_selections(families=None) -> tuple:
    """The `visual_selection` values (the field's choices, e.g. merge, visionzip) when one of `families` (default:
    every family) reads the field, else ()."""
    from pitome_hf.families import FAMILIES
    from pitome_hf.modeling.merge_config import MERGE_FIELD

    reads = any("visual_selection" in config.family_merge_fields
                for family in families or FAMILIES for config in family.config_classes)
    return MERGE_FIELD["visual_selection"].choices if reads else ()


def add_visual_sweep_arguments(parser: argparse.ArgumentParser, visual_tokens=(), family=None,
                               selections=None) -> None:
    """The visual-token sweep of the vision-language commands (evaluate --task vqa, benchmark <vlm family>):
    `--visual-tokens K [K ...]` sweeps the `visual_tokens` field and `--visual-selections` the `visual_selection`
    field ("merge" runs each of --methods; "visionzip", "divprune" and "dart" each add a row per budget); both fields
    are in SWEPT, so these commands have no one-value flag for them."""
    choices = visual_selections([family] if family is not None else None)
    parser.add_argument("--visual-tokens", nargs="+", type=int, default=list(visual_tokens), dest="visual_budgets",
                        metavar="K", help="visual-token budgets to sweep (visual tokens per image reaching the "
                        "language model), rows next to the --keep-ratios rows (default: %(default)s)")
    default = list(choices) if selections is None else list(selections)
    parser.add_argument("--visual-selections", nargs="+", default=default, choices=choices, metavar="SELECTION",
                        help=f"visual_selection values of the rows: {', '.join(choices)}; 'merge' runs each of "
                        "--methods, another adds one row per budget (default: %(default)s)")


def check_visual_sweep(visual_tokens, selections) -> None:
    """Each budget an int >= 1 (the field's own check), no value given twice."""
    from pitome_hf.modeling.merge_config import MERGE_FIELD

    for k in visual_tokens:
        try:
            MERGE_FIELD["visual_tokens"].validate(k)
        except ValueError as error:
            raise ValueError(f"--visual-tokens: {error}") from None
    _each_once("--visual-tokens", list(visual_tokens))
    _each_once("--visual-selections", list(selections))
