"""Assemble the folder to upload as a Hugging Face Space: the app's modules, README, requirements, examples, pitome_hf,
model.

    python spaces/build_space.py build/space          # then: hf upload USER/SPACE build/space --repo-type space

pitome_hf is not on PyPI, so the Space installs the project's wheel, built here from this checkout and listed by
file name in requirements.txt. No model is shipped unless --model names a folder (copied to `model/`, which app.py
uses when PITOME_SPACE_MODEL is not set): on the Hub, set the Space variable PITOME_SPACE_MODEL to a real ImageNet
classifier id (for example google/vit-base-patch16-224) instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# app.py and every module it imports from this folder, the Space card and the pins
FILES = ("app.py", "analysis.py", "catalog.py", "handlers.py", "README.md", "requirements.txt")


def wheel_line(requirements: Path) -> str:
    lines = [ln.strip() for ln in requirements.read_text().splitlines()]
    wheels = [ln for ln in lines if ln.endswith(".whl")]
    if len(wheels) != 1:
        raise SystemExit(f"{requirements} must list exactly one pitome_hf wheel; it lists {wheels}.")
    return wheels[0].removeprefix("./")


def build(out: Path, model: Path | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(HERE / name, out / name)
    shutil.copytree(HERE / "examples", out / "examples", dirs_exist_ok=True)
    expected = wheel_line(HERE / "requirements.txt")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    if not (out / expected).is_file():
        built = sorted(p.name for p in out.glob("pitome_hf-*.whl"))
        raise SystemExit(f"built {built}, but requirements.txt lists {expected}: update the version there.")
    if model is not None:
        if not (model / "config.json").is_file():
            raise SystemExit(f"{model} has no config.json: train or convert the default model first.")
        shutil.copytree(model, out / "model", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a model folder to ship as model/, the Space's default when PITOME_SPACE_MODEL is not set "
                        "(default: none; set PITOME_SPACE_MODEL on the Space)")
    args = parser.parse_args(argv)
    out = build(args.out, args.model)
    print(f"Space folder ready: {out}")
    if args.model is None:
        print("No model/ shipped: set the Space variable PITOME_SPACE_MODEL to an ImageNet classifier id (for example "
              "google/vit-base-patch16-224), and PITOME_SPACE_MODELS to the models visitors may pick.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
