#!/usr/bin/env bash
# A rolling upgrade and a rollback between an older release (a commit of this repository) and the working
# tree, against a real broker: tests/manual/test_mixed_versions.py. Needs `make setup` done (the .venv) and
# a broker (DESKTRACE_KAFKA_BOOTSTRAP, e.g. from `.venv/bin/desktrace-local up`).
#   scripts/mixed_versions.sh OLD_COMMIT [pytest args...]
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi
old_commit="$1"; shift
root="$(cd "$(dirname "$0")/.." && pwd)"
: "${DESKTRACE_KAFKA_BOOTSTRAP:?set it to a broker (e.g. eval the output of .venv/bin/desktrace-local up)}"
tree="$(mktemp -d -t desktrace-old.XXXXXX)"
cleanup() { git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; }
trap cleanup EXIT
echo "checking out $old_commit into $tree" >&2
git -C "$root" worktree add --detach --force "$tree" "$old_commit" >/dev/null
cd "$root"
DESKTRACE_OLD_TREE="$tree" .venv/bin/pytest -p no:cacheprovider tests/manual/test_mixed_versions.py "$@"
