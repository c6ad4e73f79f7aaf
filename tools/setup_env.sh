#!/usr/bin/env bash
# Reproducible CPU (or CUDA) environment for mmvssm: one command, idempotent.
#
#   bash tools/setup_env.sh            # creates .venv and installs the pinned stack + mmvssm (editable)
#
# Environment variables:
#   MMVSSM_VENV        virtualenv path (default: <repo>/.venv)
#   MMVSSM_CACHE       wheel cache outside the checkout (default: ~/.cache/mmvssm)
#   MMVSSM_WHEEL_SEED  opt-in: a folder holding a prebuilt mmcv wheel for exactly this
#                      (mmcv, torch, python) to seed the cache (e.g. ../shared/wheels). Never needed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMVSSM_VENV:-$REPO/.venv}"
CACHE="${MMVSSM_CACHE:-${HOME:?is not set: set MMVSSM_CACHE (the wheel cache folder) or HOME}/.cache/mmvssm}"
TORCH_VERSION="${MMVSSM_TORCH:-2.14.1}"
TORCHVISION_VERSION="${MMVSSM_TORCHVISION:-0.29.1}"
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMSEG_VERSION=1.2.2
SETUPTOOLS_SPEC='setuptools>=70,<81'   # >=81 dropped pkg_resources (mmcv setup.py, mmengine 'mmdet::' bases)

STEP="start"
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "[setup_env] FAILED at step: $STEP (exit $rc)" >&2; fi' EXIT
log() { echo "[setup_env] $(date +%H:%M:%S) $*"; }
step() { STEP="$1"; log "== $1"; }

step "virtualenv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -m pip --version >/dev/null 2>&1; then  # a venv creation that was interrupted
  log "$VENV has no pip: installing it (ensurepip)"
  "$PY" -m ensurepip --upgrade >/dev/null || {
    echo "[setup_env] $VENV is broken (no pip, ensurepip failed): delete it and re-run" >&2; exit 1; }
fi
PIP=("$PY" -m pip --disable-pip-version-check -q)

have() { "$PY" - "$@" <<'PYEOF'
import sys
from importlib import metadata
ok = True
for spec in sys.argv[1:]:
    name, _, ver = spec.partition("==")
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        ok = False; break
    if ver and got.split("+")[0] != ver:
        ok = False; break
sys.exit(0 if ok else 1)
PYEOF
}

step "build tools ($SETUPTOOLS_SPEC, wheel, ninja)"
if ! "$PY" -c "import pkg_resources, wheel, ninja" 2>/dev/null; then
  "${PIP[@]}" install "$SETUPTOOLS_SPEC" wheel ninja
fi

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if ! have "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"; then
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

step "python deps (mmengine $MMENGINE_VERSION, timm, pycocotools, ...)"
if ! have "mmengine==$MMENGINE_VERSION" timm pycocotools ftfy regex matplotlib psutil pytest; then
  "${PIP[@]}" install "mmengine==$MMENGINE_VERSION" timm pycocotools ftfy regex matplotlib psutil \
    "numpy" "opencv-python-headless" pytest
fi

TORCH_V="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
PY_V="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION/torch-$TORCH_V/$PY_V"

mmcv_ops_ok() { "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; }

build_mmcv_wheel() {
  STEP="mmcv $MMCV_VERSION build from sdist (~30 min on 2 cores)"
  log "== $STEP"
  local src
  src="$(mktemp -d)"
  "${PIP[@]}" download "mmcv==$MMCV_VERSION" --no-deps --no-binary :all: --no-build-isolation -d "$src"
  tar -xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
  local cxxstd
  cxxstd="$("$PY" "$REPO/tools/torch_cxx_std.py" 2>/dev/null)"
  log "torch $TORCH_V headers need -std=$cxxstd; patching mmcv's setup.py"
  sed -i "s/-std=c++14/-std=$cxxstd/g; s/-std=c++17/-std=$cxxstd/g" "$src/mmcv-$MMCV_VERSION/setup.py"
  rm -rf "$WHEEL_DIR.tmp"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WHEEL_DIR.tmp" "$src/mmcv-$MMCV_VERSION"
  mv "$WHEEL_DIR.tmp"/mmcv-*.whl "$WHEEL_DIR/" && rmdir "$WHEEL_DIR.tmp"
  rm -rf "$src"
}

seed_wheel_cache() {  # opt-in MMVSSM_WHEEL_SEED; copied under a temporary name, then renamed
  [ -n "${MMVSSM_WHEEL_SEED:-}" ] || return 0
  local wheel
  for wheel in "$MMVSSM_WHEEL_SEED"/mmcv-$MMCV_VERSION-$PY_V-*.whl; do
    if [ -f "$wheel" ]; then
      log "seeding the wheel cache from $MMVSSM_WHEEL_SEED (opt-in MMVSSM_WHEEL_SEED)"
      cp "$wheel" "$WHEEL_DIR/.seed.tmp" && mv "$WHEEL_DIR/.seed.tmp" "$WHEEL_DIR/$(basename "$wheel")"
      return 0
    fi
  done
  log "MMVSSM_WHEEL_SEED=$MMVSSM_WHEEL_SEED has no mmcv-$MMCV_VERSION-$PY_V wheel: building"
}

have_cached_wheel() { ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; }

install_cached_mmcv() {
  STEP="mmcv $MMCV_VERSION install from cached wheel"
  "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  "${PIP[@]}" install addict packaging Pillow pyyaml yapf
  mmcv_ops_ok
}

install_from_cache() { have_cached_wheel && install_cached_mmcv; }

step "mmcv $MMCV_VERSION with ops (wheel cache: $WHEEL_DIR)"
if ! mmcv_ops_ok; then
  mkdir -p "$WHEEL_DIR"
  if ! install_from_cache; then
    if have_cached_wheel; then
      log "cached mmcv wheel does not install or import with torch $TORCH_V (a truncated file," \
          "or built for another torch): dropping it"
      rm -f "$WHEEL_DIR"/mmcv-*.whl
    fi
    seed_wheel_cache
    if ! install_from_cache; then
      rm -f "$WHEEL_DIR"/mmcv-*.whl  # a seeded wheel that does not install
      build_mmcv_wheel
      install_cached_mmcv || { echo "[setup_env] freshly built mmcv does not import: $("$PY" -c 'import mmcv.ops' 2>&1 | tail -1)" >&2; exit 1; }
    fi
  fi
fi

step "mmdet $MMDET_VERSION + mmsegmentation $MMSEG_VERSION"
if ! have "mmdet==$MMDET_VERSION" "mmsegmentation==$MMSEG_VERSION"; then
  "${PIP[@]}" install "mmdet==$MMDET_VERSION" "mmsegmentation==$MMSEG_VERSION" "$SETUPTOOLS_SPEC"
fi

step "mmvssm (editable, builds the C++ scan kernel)"
STAMP="$VENV/.mmvssm-build-stamp"
SRC_HASH="$( (echo "torch $TORCH_V"; find "$REPO/setup.py" "$REPO/pyproject.toml" "$REPO/mmvssm/ops/csrc" -type f -print0 2>/dev/null | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)"
# rebuilt when the sources or torch changed, or the kernel is gone (git clean removes mmvssm/_C*.so)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$SRC_HASH" ] || ! "$PY" -c "import mmvssm._C" 2>/dev/null; then
  (cd "$REPO" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install --no-build-isolation --no-deps -e .)
  echo "$SRC_HASH" > "$STAMP"
fi

step "check"
"$PY" -c "import mmcv.ops, mmdet, mmseg, mmvssm, mmvssm._C; print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__)"
STEP="done"
log "environment ready: $VENV"
