#!/usr/bin/env bash
# Fails when proto/buf/validate/validate.proto is not what `npm run vendor:protovalidate`
# makes from the installed @bufbuild/protovalidate, or packages/contracts is not what
# `npm run generate` makes from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent vendor:protovalidate
npm run --silent generate
if [ -n "$(git status --porcelain -- proto/buf packages/contracts)" ]; then
  echo "proto/buf or packages/contracts is out of step: run 'npm run vendor:protovalidate' (after changing @bufbuild/protovalidate) and 'npm run generate', and commit the result." >&2
  git status --short -- proto/buf packages/contracts >&2
  git --no-pager diff --stat -- proto/buf packages/contracts >&2
  exit 1
fi
echo "vendored and generated code are up to date"
