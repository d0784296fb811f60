#!/usr/bin/env bash
# install-deps.sh — installs what chorus needs to build and test, on Debian 12, idempotently.
# Debian packages via apt-get (as root, or through sudo), npm packages for the Node test suite.
# Quick when everything is already there: it only calls apt-get for packages that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config git
  libuv1-dev libhttp-parser-dev libssl-dev zlib1g-dev libcjson-dev
  libsqlite3-dev libjwt-dev libcmocka-dev libcurl4-openssl-dev
  clang libclang-rt-14-dev
  python3 python3-websockets python3-pytest
  nodejs npm openssl
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from outside Debian on some machines: accept any working node + npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node test suite: the `ws` client, pinned by tests/node/package-lock.json.
if [ -f tests/node/package.json ] && [ ! -d tests/node/node_modules/ws ]; then
  (cd tests/node && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
fi
