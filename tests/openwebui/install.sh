#!/usr/bin/env bash
# Installs what `make e2e-openwebui` needs, outside the project's own venv:
#   - a venv (default .venv-openwebui in the repo, or $OWUI_VENV) with open-webui==0.12.4 and
#     playwright (the Python package only: Playwright's own browser download is never used),
#   - Debian's chromium (+ chromium-driver) when /usr/bin/chromium is missing.
# Idempotent: whatever is already there is skipped. Needs PyPI and the Debian mirror only.
# The Open WebUI install is large (torch, transformers, chromadb, ...): about 2.5 minutes on
# this project's 2-core machine with a warm pip cache.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OWUI_VENV="${OWUI_VENV:-$REPO/.venv-openwebui}"
OWUI_VERSION="${OWUI_VERSION:-0.12.4}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian chromium"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
else
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
fi

if [ ! -x "$OWUI_VENV/bin/python" ]; then
    echo "creating venv $OWUI_VENV"
    "$PYTHON" -m venv "$OWUI_VENV"
    "$OWUI_VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
fi

have() {  # have PACKAGE VERSION-or-empty
    local v
    v="$("$OWUI_VENV/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')"
    [ -n "$v" ] && { [ -z "${2:-}" ] || [ "$v" = "$2" ]; }
}

want=()
have open-webui "$OWUI_VERSION" || want+=("open-webui==$OWUI_VERSION")
have playwright || want+=("playwright")
if [ "${#want[@]}" -gt 0 ]; then
    echo "installing ${want[*]} into $OWUI_VENV"
    start=$(date +%s)
    "$OWUI_VENV/bin/python" -m pip install --disable-pip-version-check "${want[@]}"
    echo "pip install took $(( $(date +%s) - start )) s"
else
    echo "open-webui $OWUI_VERSION and playwright already in $OWUI_VENV"
fi

"$OWUI_VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("ready:", "open-webui", md.version("open-webui"), "/ playwright", md.version("playwright"))
PY
