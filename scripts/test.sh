#!/usr/bin/env bash
# Sets everything up, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RTAI_PLUGIN_DIR="$PWD/target/release"
source scripts/env.sh
cargo test --release --workspace --no-fail-fast
