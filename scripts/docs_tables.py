"""The README's tables that code can produce, produced by it: the commands, the families, setup.cfg's description.

    python scripts/docs_tables.py            # check: exit 1 naming every block that differs from the code
    python scripts/docs_tables.py --write    # rewrite those blocks in README.md and the description in setup.cfg

A generated block sits between `<!-- generated:NAME -->` and `<!-- end:NAME -->` in README.md; tests/test_docs.py
fails when a block, the setup.cfg description or a relative link disagrees with the code or the tree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def commands_table() -> str:
    from pitome_hf.cli import COMMANDS

    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `pitome-hf {name}` | {help} |" for name, (_, help) in COMMANDS.items()]
    return "\n".join(rows)


def families_table() -> str:
    from pitome_hf.families import FAMILIES

    rows = ["| family | what merges | PiToMe classes | `evaluate` tasks | `benchmark` |", "|---|---|---|---|---|"]
    for f in FAMILIES:
        classes = ", ".join(f"`{m.pitome.__name__}`" for m in f.models)
        tasks = ", ".join(f.tasks) or "(study, fidelity)"
        rows.append(f"| `{f.name}` | {f.description} | {classes} | {tasks} | {'yes' if f.benchmark else 'no'} |")
    return "\n".join(rows)


def description() -> str:
    from pitome_hf.families import FAMILIES

    names = ", ".join(f.name for f in FAMILIES)
    return (f"PiToMe token merging (NeurIPS 2024) for Hugging Face transformers, with ToMe as baseline: "
            f"{len(FAMILIES)} families ({names})")


BLOCKS = {"commands": commands_table, "families": families_table}


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- end:{name} -->)", re.S)


def differences(readme: str, setup_cfg: str) -> list[str]:
    """What differs between the pages and the code (empty: nothing)."""
    out = []
    for name, make in BLOCKS.items():
        match = block_pattern(name).search(readme)
        if match is None:
            out.append(f"README.md has no generated block {name!r}")
        elif match.group(2).strip() != make().strip():
            out.append(f"README.md's {name} table differs from the code: run python scripts/docs_tables.py --write")
    found = re.search(r"^description = (.*)$", setup_cfg, re.M)
    if found is None or found.group(1).strip() != description():
        out.append(f"setup.cfg's description is not {description()!r}: run python scripts/docs_tables.py --write")
    return out


def write() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, make in BLOCKS.items():
        readme = block_pattern(name).sub(lambda m: m.group(1) + make() + "\n" + m.group(3), readme)
    (ROOT / "README.md").write_text(readme)
    cfg = (ROOT / "setup.cfg").read_text()
    (ROOT / "setup.cfg").write_text(re.sub(r"^description = .*$", f"description = {description()}", cfg, flags=re.M))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.write:
        write()
    problems = differences((ROOT / "README.md").read_text(), (ROOT / "setup.cfg").read_text())
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
