"""Start-up cost of the Space's first view: load spaces/app.py in fresh processes and print `demo.first_view.seconds`
(the examples, finding and loading the default model, the first example compared) and the process time until the
page is built. Run on a quiet machine:

    python scripts/space_startup.py [--runs 3] [--empty-cache]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CODE = """
import json, os, runpy, time
import torch
torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as the app does before its first view (share_cores)
start = time.perf_counter()
demo = runpy.run_path("spaces/app.py", run_name="space_startup")["demo"]  # the module builds it once, as served
print(json.dumps({"first_view_s": demo.first_view.seconds, "built_s": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--empty-cache", action="store_true", help="a fresh PITOME_SPACE_CACHE for the first run")
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    if args.empty_cache:
        env["PITOME_SPACE_CACHE"] = tempfile.mkdtemp(prefix="pitome_space_cache_")
    for run in range(args.runs):
        begin = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"run {run + 1}: first view {result['first_view_s']:.1f} s, page built {result['built_s']:.1f} s after "
              f"the app started loading, {time.perf_counter() - begin:.1f} s for the whole process")


if __name__ == "__main__":
    main()
