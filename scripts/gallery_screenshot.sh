#!/usr/bin/env bash
# Open the pseudo-label gallery in headless Chromium and save a screenshot (a manual check, not run
# in CI: it needs Debian's `chromium` package, which `make test` does not install).
#   scripts/gallery_screenshot.sh DATA/gallery/index.html shot.png [WIDTH,HEIGHT (default 1200,900)]
# Exits non-zero if chromium is missing, fails, or writes no screenshot.
set -euo pipefail
page=${1:?usage: $0 path/to/index.html out.png}
shot=${2:?usage: $0 path/to/index.html out.png}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$shot"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$(realpath -m "$shot")" --window-size="${3:-1200,900}" "file://$(realpath "$page")" >/dev/null 2>&1 || true
[ -s "$shot" ] || { echo "no screenshot written to $shot" >&2; exit 1; }
echo "$shot"
