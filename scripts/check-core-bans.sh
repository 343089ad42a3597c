#!/usr/bin/env bash
# Proves the core's clippy bans are active: clippy must refuse a crate under core/ that reads
# the clocks or uses std's HashMap (DESIGN §2, §3). Exits non-zero if any ban is not enforced.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if cargo clippy --quiet --manifest-path "$root/core/ban-probe/Cargo.toml" \
    --target-dir "$root/target/ban-probe" -- -D warnings >"$out" 2>&1; then
  echo "check-core-bans: clippy accepted a crate that reads the clock; the bans are not active" >&2
  exit 1
fi
status=0
for banned in 'std::time::Instant::now' 'std::time::SystemTime::now' 'std::collections::HashMap'; do
  if grep -q "disallowed .*\`$banned\`" "$out"; then
    echo "check-core-bans: $banned is refused"
  else
    echo "check-core-bans: $banned is NOT refused" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then cat "$out" >&2; fi
exit "$status"
