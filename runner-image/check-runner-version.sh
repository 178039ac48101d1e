#!/usr/bin/env bash
# The runner version is pinned in one place, runner-image/RUNNER_VERSION. The Dockerfile's
# `ARG RUNNER_VERSION=` default (used by a build that passes no --build-arg) must equal it.
# Usage: check-runner-version.sh [<directory holding RUNNER_VERSION and Dockerfile>]
set -euo pipefail

dir="${1:-$(dirname "${BASH_SOURCE[0]}")}"
version="$(tr -d '[:space:]' <"${dir}/RUNNER_VERSION")"
if [[ ! "${version}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "${dir}/RUNNER_VERSION: '${version}' is not a runner release number (like 2.336.0)" >&2
  exit 1
fi
defaults="$(sed -n 's/^ARG RUNNER_VERSION=//p' "${dir}/Dockerfile")"
if [[ "${defaults}" != "${version}" ]]; then
  echo "${dir}/Dockerfile: ARG RUNNER_VERSION=${defaults:-<none>} differs from ${dir}/RUNNER_VERSION (${version}): set the ARG default to ${version}" >&2
  exit 1
fi
echo "RUNNER_VERSION ${version}: runner-image/RUNNER_VERSION and the Dockerfile agree"
