"""Deliberate mistakes in the merge core and the visual selections must each make a test fail.

Usage: python scripts/mutation_check.py [--only TEXT ...] [--list] [pytest args...]

    python scripts/mutation_check.py                       # every mutation, each with its own tests
    python scripts/mutation_check.py --list                # the mutations' names
    python scripts/mutation_check.py --only divprune dart  # those whose name contains 'divprune' or 'dart'
    python scripts/mutation_check.py --only visionzip -- tests/test_visual_selections.py -x   # other pytest args

For each mutation below, the script edits the file of modeling/ that holds the line (merging.py, merge_fields.py,
merge_config.py, merge_state.py, visual_reduction.py or qwen_reduction.py; exactly one occurrence must match), runs
the tests (the mutation's own: tests/test_faithful.py and tests/test_merging.py for the merge core,
tests/test_visual_selections.py for the visual selections, tests/test_qwen3_vl.py and tests/test_qwen2_5_vl.py for
the Qwen families' survivor ids, DeepStack rows and frames; or the pytest args given), restores the file (also on Ctrl-C), and reports whether the
tests caught it. Exit code 1 when a mutation survives. Files are restored byte for byte from memory; run it on a clean
or committed tree anyway, and not in a checkout others are testing in at the same time (the mutated file is live while
its tests run).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELING = ROOT / "modeling"

FILES = ("merging.py", "merge_fields.py", "merge_config.py", "merge_state.py", "visual_reduction.py", "qwen_reduction.py")
CORE_TESTS = ("tests/test_faithful.py", "tests/test_merging.py")
SELECTION_TESTS = ("tests/test_visual_selections.py",)
QWEN_TESTS = ("tests/test_qwen3_vl.py", "tests/test_qwen2_5_vl.py")

# (name, exact text in one of FILES, replacement[, the tests that must catch it: CORE_TESTS unless given])
MUTATIONS = [
    ("destination by argmin (PiToMe)", "dst = b.gather(1, first_max(s_ab, tol))", "dst = b.gather(1, first_max(-s_ab, tol))"),
    ("A/B halves swapped (alternate split)", "a, b = order[:, 0 : 2 * r : 2], order[:, 1 : 2 * r : 2]",
     "b, a = order[:, 0 : 2 * r : 2], order[:, 1 : 2 * r : 2]"),
    ("energy ranked lowest first (PiToMe, pitome_bsm)",
     "values, order = torch.sort(E, dim=1, descending=True, stable=True)",
     "values, order = torch.sort(E, dim=1, descending=False, stable=True)"),
    ("ties decided by rounding (no tie tolerance in the ranking)", "(gap > tolerance).long()", "(gap > -1.0).long()"),
    ("ties ranked against index order", "return torch.sort(group * T + order, dim=1, stable=True).values % T",
     "return (T - 1) - torch.sort(group * T + (T - 1 - order), dim=1, stable=True).values % T"),
    ("destination ties decided by rounding", "(scores >= scores.amax(dim=-1, keepdim=True) - tolerance)",
     "(scores >= scores.amax(dim=-1, keepdim=True))"),
    ("energies scored in float32", 'return torch.float32 if torch.device(device).type == "mps" else torch.float64',
     "return torch.float32"),
    ("top split takes ranks r..2r as A", "a, b = order[:, :r], order[:, r : 2 * r]", "b, a = order[:, :r], order[:, r : 2 * r]"),
    ("unweighted merge (sizes ignored)", "weight = (src_s / den.gather(1, dst_out))",
     "weight = (torch.ones_like(src_s) / (1 + torch.ones_like(den).scatter_add(1, dst_out, torch.ones_like(src_s))).gather(1, dst_out))"),
    ("sizes not accumulated", "den = mergeable.gather(1, keep).scatter_add_(1, dst_out, src_s)",
     "den = mergeable.gather(1, keep).scatter_add_(1, dst_out, 0 * src_s)"),
    ("survivors numbered from 1 (running count off by one)", "pos = gone.logical_not_().cumsum(1).sub_(1)",
     "pos = gone.logical_not_().cumsum(1)"),
    ("survivors left in energy order (keep_order ignored)", "    if plan.keep_order:  # survivors to their output slots",
     "    if False:  # survivors to their output slots"),
    ("margin schedule off by one layer", "return m0 - (m0 - m_end) * layer / self.num_layers",
     "return m0 - (m0 - m_end) * (layer + 1) / self.num_layers"),
    ("margin_end ignored", "return m0 - (m0 - m_end) * layer / self.num_layers", "return m0 - m0 * layer / self.num_layers"),
    ("energy below the margin without alpha",
     "return F.elu(shifted, alpha=alpha).mean(-1) + (margin / S.shape[-1]) * (shifted >= 0).sum(-1, dtype=S.dtype)",
     "return F.elu(shifted).mean(-1) + (margin / S.shape[-1]) * (shifted >= 0).sum(-1, dtype=S.dtype)"),
    ("energy above the margin without the margin term",
     "return F.elu(shifted, alpha=alpha).mean(-1) + (margin / S.shape[-1]) * (shifted >= 0).sum(-1, dtype=S.dtype)",
     "return F.elu(shifted, alpha=alpha).mean(-1)"),
    ("proportional attention with size instead of log(size)", "return torch.log(sizes)[:, None, None, :].to(dtype)",
     "return sizes[:, None, None, :].to(dtype)"),
    ("proportional attention off", "return torch.log(sizes)[:, None, None, :].to(dtype)",
     "return torch.zeros_like(sizes)[:, None, None, :].to(dtype)"),
    ("ToMe parity counted over mergeable tokens only", "first = num_prefix % 2", "first = 0"),
    ("ToMe keeps the lowest-scoring matches", "ranked = torch.sort(best, dim=1, descending=True, stable=True).indices\n    src = a.gather",
     "ranked = torch.sort(best, dim=1, descending=False, stable=True).indices\n    src = a.gather"),
    ("pitome_bsm halves swapped", "a, b = order[:, 0::2], order[:, 1::2]", "b, a = order[:, 0::2], order[:, 1::2]"),
    ("bipartite matching (ToMe, pitome_bsm) destination by argmin", "best, match = scores.max(dim=-1)",
     "best, match = scores.min(dim=-1)"),
    ("ToMe in spatial order by default", 'else method != "tome"  # ToMe: the original order',
     "else True  # ToMe: the original order"),
    ("ToMe's unmerged A tokens left in score order behind the prefix",
     "    if num_prefix:\n        unmerged = unmerged.sort(dim=1).values", "    if False:\n        unmerged = unmerged.sort(dim=1).values"),
    ("ToMe's B tokens before its unmerged A tokens", "return plan._replace(keep=torch.cat([unmerged, b], dim=1))",
     "return plan._replace(keep=torch.cat([b, unmerged], dim=1))"),
    ("budget without the floor(T/2) clamp", "return max(0, min(r, T // 2))", "return max(0, r)"),
    # the visual selections (visual_reduction.py), against tests/reference_selections.py
    ("VisionZip contextual tokens join their least similar target (argmin)",
     "dst = targets[(unit[others] @ unit[targets].T).argmax(dim=-1)]",
     "dst = targets[(unit[others] @ unit[targets].T).argmin(dim=-1)]", SELECTION_TESTS),
    ("VisionZip contextual targets not spaced uniformly (the first c remaining tokens)",
     "pick[torch.arange(0, remaining.numel(), step, device=device)[:c]] = True", "pick[:c] = True", SELECTION_TESTS),
    ("VisionZip dominant tokens the least attended",
     "order = torch.sort(received.float(), descending=True, stable=True).indices",
     "order = torch.sort(received.float(), descending=False, stable=True).indices", SELECTION_TESTS),
    ("DivPrune max-sum instead of max-min (distance to the picked set summed)",
     "nearest = torch.minimum(nearest, distance[pick])", "nearest = nearest + distance[pick]", SELECTION_TESTS),
    ("DivPrune first token: token 0", "first = first_max(others.amin(dim=1), tol)",
     "first = first_max(torch.zeros_like(others[0]), tol)", SELECTION_TESTS),
    ("DivPrune first token: the one nearest to another (min instead of max)",
     "first = first_max(others.amin(dim=1), tol)", "first = first_max(-others.amin(dim=1), tol)", SELECTION_TESTS),
    ("DivPrune distance on unnormalised features (not cosine)", "distance = 1.0 - unit @ unit.T",
     "distance = 1.0 - features.double() @ features.double().T", SELECTION_TESTS),
    ("DART keeps the most duplicated tokens", "least = ranking((-similarity[i]).masked_fill(",
     "least = ranking((similarity[i]).masked_fill(", SELECTION_TESTS),
    ("DART pivots: the smallest L1 norms", "pivot = ranking(norms[None],", "pivot = ranking(-norms[None],",
     SELECTION_TESTS),
    ("DART pivots by L2 norm", "norms = feats.abs().sum(dim=-1)", "norms = feats.norm(dim=-1)", SELECTION_TESTS),
    ("DART one pivot", "p = min(pivots, keep)\n    norms", "p = min(1, keep)\n    norms", SELECTION_TESTS),
    ("DART budget all to the first pivot", "count = share + (1 if i < extra else 0)",
     "count = (keep - p) if i == 0 else 0", SELECTION_TESTS),
    ("DART remainder to the last pivots", "count = share + (1 if i < extra else 0)",
     "count = share + (1 if i >= p - extra else 0)", SELECTION_TESTS),
    ("reduce_input runs the merge method for divprune", 'if selection == "divprune":',
     'if selection == "divprune-":', SELECTION_TESTS),
    # the Qwen families' reduction at the language model's input (qwen_reduction.py): survivor ids, DeepStack, frames
    ("survivors at the first k grid ids (kept indices ignored in positions)",
     "pieces.append(full[:, survivors.to(device)])", "pieces.append(full[:, :length])", QWEN_TESTS),
    ("text after a reduced image continues from its kept count",
     "current += max(int(grid[1]), int(grid[2])) // sms", "current += length if kind else 0", QWEN_TESTS),
    ("DeepStack rows of the first k stock tokens (not the survivors')",
     "follow_reduction(level[i], part[3], part[1])", "level[i][:part[0].shape[0]]", QWEN_TESTS),
    ("DeepStack rows summed, not averaged, over a merged token's members",
     "return (out / sizes.to(out.device, torch.float32)[:, None]).to(values.dtype)", "return out.to(values.dtype)",
     QWEN_TESTS),
    ("video temporal patches reduced together (no budget per frame)",
     'frames = int(grid[0]) if getattr(self.config, "frames_apart", False) else 1', "frames = 1", QWEN_TESTS),
    ("a frame's survivors not offset to their frame", "kept = [k + a for k, a in zip(kept, stock)]",
     "kept = list(kept)", QWEN_TESTS),
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="TEXT", default=None,
                        help="run only the mutations whose name contains one of these (case-insensitive)")
    parser.add_argument("--list", action="store_true", help="print the mutations' names (with --only: those) and exit")
    parser.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG",
                        help="the tests to run for every mutation instead of each one's own (after --, any pytest "
                        "option too)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    chosen = [m for m in MUTATIONS if args.only is None or any(t.lower() in m[0].lower() for t in args.only)]
    if args.list:
        print("\n".join(m[0] for m in chosen))
        return 0
    if not chosen:
        print(f"no mutation's name contains any of {args.only}; --list shows them", file=sys.stderr)
        return 2
    originals = {name: (MODELING / name).read_bytes() for name in FILES}
    texts = {name: data.decode() for name, data in originals.items()}
    survivors = []
    try:
        for name, old, new, *own in chosen:
            tests = args.pytest_args or list(own[0] if own else CORE_TESTS)
            where = [f for f, text in texts.items() if text.count(old) == 1]
            if len(where) != 1 or sum(text.count(old) for text in texts.values()) != 1:
                print(f"SKIP  {name}: the line to mutate must occur exactly once in {', '.join(FILES)} (update the script)")
                survivors.append(name)
                continue
            target = MODELING / where[0]
            target.write_text(texts[where[0]].replace(old, new))
            try:
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                      cwd=ROOT, capture_output=True, text=True)
            finally:
                target.write_bytes(originals[where[0]])
            caught = proc.returncode != 0
            last = (proc.stdout.strip().splitlines() or ["?"])[-1]
            print(f"{'caught' if caught else 'MISSED'}  {name}  ({where[0]}; {last})", flush=True)
            if not caught:
                survivors.append(name)
    finally:
        for name, data in originals.items():
            (MODELING / name).write_bytes(data)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutations caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
