"""Analytic FLOPs-ideal prefill speed-up of the vision-language families at full language-model depth (no timing).

    python scripts/vlm_ideal_speedup.py                       # Qwen2.5-VL-3B shape, 36 LM layers, one 448 px image
    python scripts/vlm_ideal_speedup.py --lm-layers 4         # the depth the CPU benchmark runs

Builds each config only (no weights) from the registry's benchmark shape and its prompt builder, and divides the
unreduced prompt's prefill FLOPs (`pitome_hf.flops`, the family's function) by each budget's.
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    from pitome_hf.families import FAMILIES, family_named
    from pitome_hf.measurement.shapes import merged_fields

    # the families whose benchmark shape has visual-token budgets (the registry says which; no list kept here)
    names = [f.name for f in FAMILIES if f.benchmark is not None and f.benchmark.visual_tokens]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default=names[0], choices=names)
    parser.add_argument("--lm-layers", type=int, default=None, help="language-model layers (default: the shape's)")
    parser.add_argument("--visual-tokens", nargs="+", type=int, default=None)
    parser.add_argument("--text-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    family = family_named(args.family)
    spec = family.benchmark
    shape_name, fields = next(iter(spec.shapes.items()))
    if args.lm_layers:
        fields = merged_fields(fields, {"text_config": {"num_hidden_layers": args.lm_layers}})
    config_class = family.models[0].config_class

    def flops(**settings) -> float:
        config = config_class(**merged_fields(fields, {}), **settings)
        _, kwargs = spec.prompt(config, spec.image_size, args.text_tokens)
        return family.flops(config, **kwargs)

    base = flops(merge_method="none")
    layers = fields["text_config"]["num_hidden_layers"]
    print(f"{args.family} ({shape_name} shape, {layers} LM layers, one {spec.image_size} px image): unreduced "
          f"{base / 1e9:.0f} GFLOPs")
    for k in args.visual_tokens or spec.visual_tokens:
        print(f"  {k} visual tokens: FLOPs-ideal speed-up {base / flops(merge_method='pitome', visual_tokens=k):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
