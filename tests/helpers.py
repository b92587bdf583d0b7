"""Shared test helpers: running code in a fresh Python process where pitome_hf cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

# Blocks `import pitome_hf` (and its submodules) so remote code is the only way to get the classes.
BLOCK_PITOME = "import sys\nsys.modules['pitome_hf'] = None\n"


def run_fresh(code: str, tmp_path, env: dict | None = None, timeout: int = 240) -> dict:
    """Run `code` in a fresh interpreter with an empty HF_HOME, offline, without pitome_hf; the code must print one
    JSON object on its last line, which is returned."""
    home = tmp_path / "hf_home"
    home.mkdir(exist_ok=True)
    full_env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_PITOME + textwrap.dedent(code)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
