#!/usr/bin/env bash
# Fails when packages/contracts is not what `npm run generate` makes from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent generate
if [ -n "$(git status --porcelain -- packages/contracts)" ]; then
  echo "packages/contracts is out of step with proto/: run 'npm run generate' and commit the result." >&2
  git status --short -- packages/contracts >&2
  git --no-pager diff --stat -- packages/contracts >&2
  exit 1
fi
echo "generated code is up to date"
