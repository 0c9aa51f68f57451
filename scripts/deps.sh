#!/usr/bin/env bash
# deps.sh — install the Debian packages flatq builds and tests with, if missing.
# Runs as root with apt-get (CI, fresh machines); otherwise prints the command to run.
set -euo pipefail
pkgs=(make gcc pkg-config libyaml-dev libjansson-dev libpcre2-dev libopenblas-dev
      libopenmpi-dev openmpi-bin libcmocka-dev clang libclang-rt-dev
      slurm-wlm munge)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "flatq: missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
