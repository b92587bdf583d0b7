"""Memory and time of the tools on a big checkpoint (issue #35): a ViT-H/14-shaped classifier (632M parameters,
2.53 GB in float32, random weights) saved in safetensors shards in a temporary folder, then, each in its own fresh
process so that one's peak is not another's:

- `convert` of the sharded stock checkpoint (streamed: the weight files copied) and, for comparison, the loading
  path (`stream=False`: the model loaded and saved again), peak RSS vs the largest shard plus the largest layer;
- `model_fingerprint` of the PiToMe folder: first call (the files read; just written, so from the page cache), second
  call (unchanged: from the hash cache), and a third after one byte of a shard is flipped (same size, mtime set
  back): the value must change;
- push's load check (`verify_loads`): peak RSS of its child process vs the checkpoint's size, the bounded check (the
  default above 1 GiB: its own VmHWM, which it reports) and, for comparison, the full one (ru_maxrss of the children,
  resource.getrusage(RUSAGE_CHILDREN), an upper bound);
- a process that only imports what they import (pitome_hf, the model classes): the fixed part of every peak.

    .venv/bin/python scripts/measure_scale.py [--shard-size 1GB] [--layers 32] [--no-before] [--workdir /tmp]

Peak RSS counts resident file pages of mapped files too (safetensors are read through mmap). Each process's own peak
is VmHWM (/proc/self/status), which exec resets; ru_maxrss would carry the high-water mark of the process that forked
it (this script's, which held the whole model while building the checkpoint). Before the
fingerprints the script waits fingerprints.RACY_NS (files changed more recently are never cached). Timings depend on
the machine and its load: these are checks (a second call well under a second), not benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1e9
VIT_H14 = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
               image_size=224, patch_size=14, num_labels=1000)


def _rss_self() -> int:
    """This process's peak RSS: VmHWM, which exec resets (ru_maxrss keeps the forking parent's high-water mark, and
    this script's parent held the whole model while building the checkpoint)."""
    from pitome_hf.commands.load_check import peak_rss_bytes

    return peak_rss_bytes()


def build_stock(folder: Path, shard_size: str, layers: int) -> dict:
    """A random-weight stock ViT-H/14 classifier (`layers` deep) saved in shards; its size, largest shard and layer."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**{**VIT_H14, "num_hidden_layers": layers})).eval()
    model.save_pretrained(folder, max_shard_size=shard_size)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    layers = [sum(p.numel() * p.element_size() for p in m.parameters()) for m in model.vit.layers]
    others = [sum(p.numel() * p.element_size() for p in m.parameters())
              for m in (model.vit.embeddings, model.vit.layernorm, model.classifier)]
    shards = [p.stat().st_size for p in folder.glob("*.safetensors")]
    return {"parameters": sum(p.numel() for p in model.parameters()), "checkpoint_bytes": sum(shards),
            "shards": len(shards), "largest_shard_bytes": max(shards), "largest_layer_bytes": max(layers + others)}


def child(kind: str, *args: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the {kind} child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(kind: str, args: list) -> dict:
    """One measurement, in this (fresh) process."""
    if kind == "imports":
        import transformers  # noqa: F401

        import pitome_hf  # noqa: F401
        from pitome_hf import PiToMeViTForImageClassification  # noqa: F401
        from pitome_hf.commands import convert, push  # noqa: F401

        return {"peak_rss_bytes": _rss_self()}
    if kind in ("convert", "convert-loaded"):
        from pitome_hf.commands.convert import convert_checkpoint

        start = time.perf_counter()
        convert_checkpoint(args[0], args[1], keep_ratio=0.9, stream=kind == "convert")
        return {"seconds": time.perf_counter() - start, "peak_rss_bytes": _rss_self()}
    if kind == "fingerprint":
        from pitome_hf.evaluation.fingerprints import model_fingerprint

        folder = Path(args[0])
        times, values = [], []
        for step in ("first", "second", "flipped"):
            if step == "flipped":
                shard = sorted(folder.glob("model-*.safetensors"))[-1]
                before = os.stat(shard)
                with open(shard, "r+b") as f:  # one byte in the middle of the weights, same size
                    f.seek(before.st_size // 2)
                    byte = f.read(1)
                    f.seek(before.st_size // 2)
                    f.write(bytes([byte[0] ^ 0xFF]))
                os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
            start = time.perf_counter()
            values.append(model_fingerprint(folder))
            times.append(time.perf_counter() - start)
        return {"first_s": times[0], "second_s": times[1], "flipped_s": times[2],
                "second_equals_first": values[1] == values[0], "flipped_differs": values[2] != values[1]}
    if kind in ("verify", "verify-full"):
        from pitome_hf.commands.push import verify_loads

        start = time.perf_counter()
        result = verify_loads(Path(args[0]), max_full_bytes=None if kind == "verify" else 1 << 62)
        return {"seconds": time.perf_counter() - start, "check": result.get("check", "full"),
                "cut": result.get("cut"), "own_peak_rss_bytes": result.get("peak_rss_bytes"),
                "children_maxrss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                "this_process_peak_rss_bytes": _rss_self()}
    raise SystemExit(f"unknown child {kind!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard-size", default="1GB", help="max_shard_size of the stock checkpoint (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=32, help="encoder layers (default: %(default)s, ViT-H/14's; "
                        "fewer for a quick try of the script)")
    parser.add_argument("--no-before", action="store_true", help="skip the loading convert and the full load check")
    parser.add_argument("--workdir", default=None, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, rest)))
        return 0
    from pitome_hf.evaluation import fingerprints

    out = {}
    with tempfile.TemporaryDirectory(prefix="pitome_scale_", dir=args.workdir) as tmp:
        tmp = Path(tmp)
        out["checkpoint"] = build_stock(tmp / "stock", args.shard_size, args.layers)
        out["imports"] = child("imports")
        out["convert"] = child("convert", str(tmp / "stock"), str(tmp / "pitome"))
        if not args.no_before:
            out["convert_loaded"] = child("convert-loaded", str(tmp / "stock"), str(tmp / "pitome_loaded"))
        time.sleep(fingerprints.RACY_NS / 1e9)
        out["fingerprint"] = child("fingerprint", str(tmp / "pitome"), env={"PITOME_HF_CACHE": str(tmp / "cache")})
        out["verify"] = child("verify", str(tmp / "pitome"))
        if not args.no_before:
            out["verify_full"] = child("verify-full", str(tmp / "pitome"))
    report(out)
    return 0


def report(out: dict) -> None:
    c = out["checkpoint"]
    size, bound = c["checkpoint_bytes"], c["largest_shard_bytes"] + c["largest_layer_bytes"]
    print(json.dumps(out, indent=1))
    print(f"\ncheckpoint: ViT-H/14-shaped classifier, {c['parameters'] / 1e6:.0f}M parameters, {size / GB:.2f} GB in "
          f"{c['shards']} shards (largest {c['largest_shard_bytes'] / GB:.2f} GB; largest layer "
          f"{c['largest_layer_bytes'] / GB:.3f} GB)")
    print(f"a process importing pitome_hf and the model classes: peak RSS {out['imports']['peak_rss_bytes'] / GB:.2f} GB")
    for key, what in (("convert", "convert (streamed)"), ("convert_loaded", "convert (loaded, stream=False)")):
        if key in out:
            r = out[key]
            print(f"{what}: peak RSS {r['peak_rss_bytes'] / GB:.2f} GB = {r['peak_rss_bytes'] / bound:.2f}x "
                  f"(largest shard + largest layer), {r['seconds']:.1f} s")
    f = out["fingerprint"]
    print(f"model_fingerprint: first {f['first_s']:.2f} s, second (unchanged) {f['second_s']:.3f} s "
          f"(same value: {f['second_equals_first']}), after a same-size byte flip with mtime set back "
          f"{f['flipped_s']:.2f} s (value changed: {f['flipped_differs']})")
    for key in ("verify", "verify_full"):
        if key in out:
            r = out[key]
            # the check's child: its own VmHWM where it reports one (the bounded check), else ru_maxrss of the
            # children, an upper bound (it includes the RSS of the process that forked it, here the smaller one)
            peak = r["own_peak_rss_bytes"] or r["children_maxrss_bytes"]
            how = "VmHWM" if r["own_peak_rss_bytes"] else "RUSAGE_CHILDREN"
            print(f"verify_loads ({r['check']} check): child peak RSS {peak / GB:.2f} GB ({how}) = "
                  f"{100 * peak / size:.0f}% of the checkpoint, {r['seconds']:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
