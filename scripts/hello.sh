#!/usr/bin/env bash
# An example shell script: pitstop run scripts/hello.sh --wait
set -euo pipefail
echo "hello from $(hostname) in ${PWD}"
echo "NON_INTERACTIVE=${NON_INTERACTIVE:-unset}"
