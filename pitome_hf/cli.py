"""The `pitome-hf` command line: `pitome-hf <command> ...` (see `pitome-hf --help`)."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, help). Each module has `main(argv)`; modules are imported only when their command runs.
COMMANDS = {
    "benchmark": ("pitome_hf.benchmark", "images/s and FLOPs of none vs ToMe vs PiToMe, side by side"),
    "convert": ("pitome_hf.checkpoint", "write the PiToMe variant of a stock checkpoint (folder or Hub id)"),
    "push": ("pitome_hf.hub", "upload a PiToMe folder with a model card carrying measured results"),
    "evaluate": ("pitome_hf.evaluation", "metric, GFLOPs, images/s of none vs ToMe vs PiToMe on a dataset"),
    "study": ("pitome_hf.study", "does PiToMe beat ToMe here? every configuration, paired 95% intervals, real weights"),
    "fidelity": ("pitome_hf.fidelity", "fidelity to the unmerged model on real weights (text: MiniLM, dinov2: ViT-S/14)"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pitome-hf", description="PiToMe token merging for Hugging Face models.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.main(argv[1:]) or 0
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad input: a message, not a stack trace
        print(f"pitome-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
