#!/usr/bin/env bash
# Installs the Azure Blob emulator (Azurite) from npm into tests/.azurite when missing.
# The Python emulators (moto_server, gcp-storage-emulator, mlflow) come from the `test` extra.
# npm runs inside that folder rather than with --prefix: --prefix would also move npm's global config
# (where a machine keeps its CA bundle setting) and break TLS to the registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.azurite/node_modules/.bin/azurite-blob" ]; then
  mkdir -p "$here/.azurite"
  cd "$here/.azurite"
  [ -f package.json ] || printf '{"name": "ckptflow-test-emulators", "private": true}\n' > package.json
  npm install --silent --no-audit --no-fund azurite@3 >/dev/null
fi
"$here/.azurite/node_modules/.bin/azurite-blob" --version >/dev/null
