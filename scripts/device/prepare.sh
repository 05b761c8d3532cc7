#!/usr/bin/env bash
# Here, before a device run (not on the device): snapshot one commit into .devtree/ and, when
# .whl/ is missing or empty, download the wheels the device image lacks (wheels.txt) into it.
# Both folders are kept out of git by .git/info/exclude and travel with `carry`.
#
#   bash scripts/device/prepare.sh [REV]        # REV defaults to HEAD
#
# Environment: PYVER (3.12, the device's python3), WHEEL_DIR (.whl), FORCE_WHEELS=1 to
# download again. PYVER=3.11 WHEEL_DIR=/tmp/whl311 gives a set for a local dry run here.
# The device run is then:  bash .devtree/scripts/device/check.sh   with carry [".whl", ".devtree"]
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
rev=${1:-HEAD}
pyver=${PYVER:-3.12}
whl=${WHEEL_DIR:-.whl}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for pattern in /.whl/ /.devtree/; do
    grep -qxF "$pattern" "$exclude" 2>/dev/null || echo "$pattern" >>"$exclude"
done

# 1. the code: a snapshot of one commit, never the live working tree (others edit it)
commit=$(git rev-parse --verify "$rev^{commit}")
rm -rf .devtree
mkdir .devtree
git archive "$commit" | tar -x -C .devtree
echo "$commit" >.devtree/DEVTREE_COMMIT
if [ ! -f .devtree/scripts/device/check.sh ]; then
    # an older commit without the device scripts: take the current ones along
    mkdir -p .devtree/scripts/device
    cp "$here"/check.sh "$here"/wheels.txt .devtree/scripts/device/
    echo "prepare: $commit has no scripts/device; copied the working tree's check.sh into .devtree"
fi
echo "prepare: .devtree = $(git log -1 --format='%h %s' "$commit")"

# 2. the wheels (cp${pyver/./} manylinux x86-64, no dependencies: the image has the rest)
if [ "${FORCE_WHEELS:-0}" = 1 ] || [ -z "$(ls "$whl"/*.whl 2>/dev/null)" ]; then
    rm -rf "$whl"
    mkdir -p "$whl"
    mapfile -t specs < <(grep -vE '^\s*(#|$)' "$here/wheels.txt")
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$whl" "${specs[@]}" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
# one version of each distribution, or pip refuses the whole install there
dups=$(ls "$whl"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "prepare: more than one wheel of: $dups (remove the extra ones from $whl)" >&2
    exit 1
fi
ls -l "$whl"
echo "prepare: wheels $(du -sh "$whl" | cut -f1), .devtree $(du -sh .devtree | cut -f1)"

# 3. what travels: tracked + untracked-not-ignored files, shared/, and the carried folders
tree_bytes=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null \
    | tail -1 | cut -f1)
carried=$(du -cb "$whl" .devtree | tail -1 | cut -f1)
shared=0
[ -d shared ] && shared=$(du -sb shared | cut -f1)
total=$((tree_bytes + carried + shared))
echo "prepare: travels about $((total / 1024 / 1024)) MiB (limit 64 MiB): working tree" \
    "$((tree_bytes / 1024)) KiB, shared/ $((shared / 1024)) KiB, .whl + .devtree $((carried / 1024)) KiB"
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
    echo "prepare: WARNING: close to or over the 64 MiB limit" >&2
    exit 1
fi
