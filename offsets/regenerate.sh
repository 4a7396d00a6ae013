#!/bin/sh
# Regenerates the offset tables in offsets/tables/ with `krait offsets generate`.
#
#   offsets/regenerate.sh KRAIT               every checked-in table, each from
#                                             $PYENV_ROOT/versions/<version>/bin/python
#   offsets/regenerate.sh KRAIT PYTHON...     the tables of these interpreters (or
#                                             libpython files), named by the version
#                                             read from each
#
# PYENV_ROOT defaults to ~/.pyenv. Review the diff before committing: a table
# changes only when the interpreter build changed (its build-id is recorded).
set -eu

if [ $# -lt 1 ]; then
  echo "usage: $0 KRAIT [PYTHON...]" >&2
  exit 2
fi
krait=$1
shift
tables=$(cd "$(dirname "$0")" && pwd)/tables

if [ $# -eq 0 ]; then
  root=${PYENV_ROOT:-$HOME/.pyenv}
  for table in "$tables"/cpython-*.txt; do
    version=${table##*/cpython-}
    version=${version%.txt}
    set -- "$@" "$root/versions/$version/bin/python"
  done
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for python in "$@"; do
  "$krait" offsets generate "$python" -o "$tmp"
  version=$(sed -n 's/^version = //p' "$tmp")
  if [ -z "$version" ]; then
    echo "$0: no version line in the table generated from $python" >&2
    exit 1
  fi
  cp "$tmp" "$tables/cpython-$version.txt"
  echo "$python -> offsets/tables/cpython-$version.txt"
done
