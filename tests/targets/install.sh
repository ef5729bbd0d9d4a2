#!/usr/bin/env bash
# Installs the real Singer targets the round-trip and chaos tests pipe the tap into, one venv each under
# .venv-targets/ (their dependencies clash with the tap's and with each other's), pinned by the
# requirements files beside this script. Quick when already done: a stamp records what was installed.
#
#   .venv-targets/pipelinewise/bin/target-postgres   pipelinewise-target-postgres (PipelineWise's target)
#   .venv-targets/meltanolabs/bin/target-postgres    meltanolabs-target-postgres (singer-sdk, validates records)
#   .venv-targets/meltano/bin/meltano                Meltano, which tests/test_meltano.py runs the tap under
#   .venv-targets/jsonl/bin/target-jsonl             target-jsonl, the loader of those Meltano runs
#
# pipelinewise-target-postgres 2.1.2 imports MutableMapping from collections.abc, so it runs on the same
# Python 3.10+ as the tap (releases before 2.x needed Python 3.9 for collections.MutableMapping).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${TAP_TARGETS_DIR:-$root/.venv-targets}"
targets=(pipelinewise meltanolabs meltano jsonl)
# the executable each venv must hold (and runs with --help once installed)
executable_of() {
  case "$1" in
    meltano) echo meltano ;;
    jsonl) echo target-jsonl ;;
    *) echo target-postgres ;;
  esac
}

# A pyenv shim is on PATH even where it cannot run, so an interpreter counts only if it starts.
python=""
for candidate in "${TARGETS_PYTHON:-}" python3 python3.12 python3.11 python3.10; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "tests/targets/install.sh: no Python 3.10 or newer with venv found (set TARGETS_PYTHON=/path/to/python3)" >&2
  exit 1
fi

stamp_value="$(
  {
    cat "$here/install.sh" "$here"/requirements-*.txt
    "$python" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
)"
stamp="$dest/.installed"
complete=1
for target in "${targets[@]}"; do
  [ -x "$dest/$target/bin/$(executable_of "$target")" ] || complete=0
done
if [ "$complete" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$stamp_value" ]; then
  exit 0
fi

mkdir -p "$dest"
rm -f "$stamp"
log="$dest/install.log"
: >"$log"
# root is the normal user on CI machines: pip only warns about it
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
for target in "${targets[@]}"; do
  echo "installing $target $(executable_of "$target") into $dest/$target" >&2
  rm -rf "${dest:?}/$target"
  if ! { "$python" -m venv "$dest/$target" &&
    "$dest/$target/bin/pip" install -q --no-input -r "$here/requirements-$target.txt" &&
    "$dest/$target/bin/$(executable_of "$target")" --help; } >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "tests/targets/install.sh: installing $target failed (whole log: $log)" >&2
    exit 1
  fi
done
echo "$stamp_value" >"$stamp"
