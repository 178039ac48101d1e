#!/usr/bin/env bash
# Install the local stack's tooling, idempotently and fast when already done:
#   - a Python venv at .tasuki/venv with tests/requirements.txt (moto, boto3, cryptography,
#     pytest, cargo-lambda), re-installed only when the requirements file changes;
#   - the Node devDependencies of tests/ (asl-validator), re-installed only when
#     tests/package-lock.json (or package.json) changes.
# Usage: scripts/bootstrap.sh          (from anywhere inside the repository)
#        TASUKI_PYTHON=python3.11 scripts/bootstrap.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state_dir="${repo_root}/.tasuki"
venv="${state_dir}/venv"
requirements="${repo_root}/tests/requirements.txt"
python="${TASUKI_PYTHON:-python3}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

hash_of() {
  # sha256 of the given files' contents, concatenated (missing files hash as empty).
  cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1
}

mkdir -p "${state_dir}"

# ---- Python venv -----------------------------------------------------------------------------
[[ -f "${requirements}" ]] || die "missing ${requirements}"
command -v "${python}" >/dev/null 2>&1 || die "${python} not found (set TASUKI_PYTHON)"
"${python}" - <<'PY' || die "Python >= 3.11 is required"
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

py_stamp="${venv}/.tasuki-requirements.sha256"
py_want="$(hash_of "${requirements}")"
if [[ -x "${venv}/bin/python" && -f "${py_stamp}" && "$(cat "${py_stamp}")" == "${py_want}" ]]; then
  log "venv up to date (${venv})"
else
  if [[ ! -x "${venv}/bin/python" ]]; then
    log "creating venv ${venv}"
    "${python}" -m venv "${venv}"
  fi
  log "installing ${requirements#"${repo_root}"/} into the venv"
  "${venv}/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
  "${venv}/bin/python" -m pip install --disable-pip-version-check --quiet -r "${requirements}"
  printf '%s\n' "${py_want}" >"${py_stamp}"
  log "venv ready"
fi

# ---- Node tooling in tests/ ------------------------------------------------------------------
tests_dir="${repo_root}/tests"
if [[ -f "${tests_dir}/package.json" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm not found (needed for tests/package.json)"
  node_stamp="${tests_dir}/node_modules/.tasuki-package.sha256"
  node_want="$(hash_of "${tests_dir}/package.json" "${tests_dir}/package-lock.json")"
  if [[ -d "${tests_dir}/node_modules" && -f "${node_stamp}" && "$(cat "${node_stamp}")" == "${node_want}" ]]; then
    log "tests/node_modules up to date"
  else
    if [[ -f "${tests_dir}/package-lock.json" ]]; then
      log "npm ci in tests/"
      (cd "${tests_dir}" && npm ci --no-audit --no-fund --loglevel=error)
    else
      log "npm install in tests/"
      (cd "${tests_dir}" && npm install --no-audit --no-fund --loglevel=error)
    fi
    node_want="$(hash_of "${tests_dir}/package.json" "${tests_dir}/package-lock.json")"
    printf '%s\n' "${node_want}" >"${node_stamp}"
    log "tests/node_modules ready"
  fi
fi

log "done"
