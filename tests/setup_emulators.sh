#!/usr/bin/env bash
# Installs the Azure Blob emulator (Azurite) from npm into tests/.azurite when missing.
# The Python emulators (moto_server, gcp-storage-emulator, mlflow) come from the `test` extra.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.azurite/node_modules/.bin/azurite-blob" ]; then
  mkdir -p "$here/.azurite"
  npm install --silent --no-audit --no-fund --prefix "$here/.azurite" azurite@3 >/dev/null
fi
