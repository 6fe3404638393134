#!/usr/bin/env bash
# Sets everything up, builds, checks formatting and lints, and runs the whole test suite.
# Fails when rustfmt, clippy or any test fails; the lints run before the tests so that
# the test runner's summary stays the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RTAI_PLUGIN_DIR="$PWD/target/release"
source scripts/env.sh

lint_failed=0
if ! cargo fmt --all --check >/dev/null; then
  echo "test: rustfmt finds unformatted code; run 'cargo fmt --all' (differences: 'cargo fmt --all --check')" >&2
  lint_failed=1
fi
# --release shares the profile, feature set and build scripts of the build setup.sh just made.
if ! cargo clippy --release --workspace --all-targets --quiet -- -D warnings; then
  echo "test: clippy warnings (above) fail the build" >&2
  lint_failed=1
fi

tests_status=0
cargo test --release --workspace --no-fail-fast || tests_status=$?
if [ "$lint_failed" -ne 0 ]; then
  echo "test: failed: rustfmt or clippy (see above)" >&2
  exit 1
fi
exit "$tests_status"
