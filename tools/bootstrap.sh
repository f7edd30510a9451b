#!/usr/bin/env bash
# Create or update Cadence's development environment (idempotent; skips work when up to date).
#   .venv/        Python 3.11 venv with requirements.txt (bpy 4.5 LTS, torch CPU, the worker stack)
#   .venv/bpy5/   bpy 5.0.1 as a --target folder; put it first on PYTHONPATH to test against Blender 5.0
# Usage: tools/bootstrap.sh [--bpy5]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CADENCE_VENV:-$root/.venv}"
req="$root/requirements.txt"

find_python() {
  local c
  for c in "${CADENCE_PYTHON:-}" python3.11 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/3.11"*/bin/python3.11 /usr/bin/python3.11 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

stamp_of() { { cat "$req" "$root/inference/requirements.txt"; echo "${1:-}"; } | sha256sum | cut -c1-16; }

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.cadence-stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
  py="$(find_python)" || {
    echo "Cadence needs Python 3.11 (the bpy wheels exist for 3.11 only)." >&2
    echo "Install it (e.g. 'pyenv install 3.11', or your distribution's python3.11) or set CADENCE_PYTHON." >&2
    exit 1
  }
  echo "[cadence] setting up $venv with $py ($("$py" --version)) ..." >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import bpy, torch, numpy, librosa, pocketsphinx, mediapipe, cv2" \
    || { echo "[cadence] environment check failed: see pip's output above" >&2; exit 1; }
  stamp_of > "$venv/.cadence-stamp"
fi

# MediaPipe's blendshape model (face_landmarker.task) into the venv, checked by sha256. Not fatal offline:
# tracking then runs on landmarks alone and says so.
if [ ! -f "$venv/share/cadence/face_landmarker.task" ]; then
  (cd "$root" && "$venv/bin/python" -m inference.tracking.landmarker_model --install >/dev/null) \
    || echo "[cadence] warning: MediaPipe's face_landmarker.task was not installed (see above)" >&2
fi

if [ "${1:-}" = "--bpy5" ] && [ "$(cat "$venv/bpy5/.cadence-stamp" 2>/dev/null)" != "5.0.1" ]; then
  echo "[cadence] installing bpy 5.0.1 into $venv/bpy5 ..." >&2
  rm -rf "$venv/bpy5"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$venv/bpy5" bpy==5.0.1 2>&1 | grep -v "^WARNING: Location" >&2 || true
  echo 5.0.1 > "$venv/bpy5/.cadence-stamp"
fi
