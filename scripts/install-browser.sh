#!/usr/bin/env bash
# What the console's browser tests need: Debian's Chromium (driven through its executablePath, so Playwright
# downloads no browser of its own) and playwright-core from the npm registry, pinned in tests/browser.
# Installs what is missing; does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x "${ORCH_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing Debian's chromium for the console's browser tests" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install Chromium and set ORCH_CHROMIUM to its path" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: install Node.js 20 or newer (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
npm ci --prefix tests/browser --no-audit --no-fund --silent
