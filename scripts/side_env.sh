# Sourced by the scripts that build a side environment (scripts/setup_pruna_env.sh, scripts/setup_optimum_env.sh):
# a virtualenv of its own at $VENV (created if missing), then
#   pip_quiet ARGS...     pip ARGS with its output filtered of this machine's index warnings and of the lines matching
#                         $PIP_NOISE (an extended regex; may be empty), its exit status kept
#   safe_install ARGS...  pip install ARGS after a dry run whose plan must not contain another torch, a torchvision
#                         or CUDA wheels (refused, naming the plan)
#   install_torch         torch==2.13.0 first, the CPU build ours runs, checked
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

pip_quiet() {
    local log status=0
    log="$(mktemp)"
    "${PIP[@]}" "$@" >"$log" 2>&1 || status=$?
    grep -vE "^WARNING: Location${PIP_NOISE:+|$PIP_NOISE}" "$log" || true
    rm -f "$log"
    return "$status"
}

safe_install() {
    local plan
    plan="$(pip_quiet install --dry-run "$@" | grep '^Would install' || true)"
    if echo "$plan" | grep -qiE '(^| )(torch-|torchvision-|nvidia-|triton-)'; then
        echo "refused: installing $* would bring: $plan" >&2
        exit 1
    fi
    echo "installing $*${plan:+ ($plan)}"
    pip_quiet install -q "$@"
}

install_torch() {
    pip_quiet install -q torch==2.13.0
    "$VENV/bin/python" -W ignore::UserWarning -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
}
