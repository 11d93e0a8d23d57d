#!/usr/bin/env bash
# Creates .venv from requirements.lock (nothing unpinned is ever installed).
# Idempotent: a stamp holding the lock's hash makes a warm run a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RTAP_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements.lock"
UV_VERSION="0.13.9"
STAMP="$VENV/.rtap-lock.sha256"

die() { echo "error: $*" >&2; exit 1; }

pick_python() {
  for candidate in "${RTAP_PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

PY="$(pick_python)" || die "Python 3.11 is required (set RTAP_PYTHON to its path); found: $(python3 --version 2>&1 || echo none)"
echo "==> creating virtualenv $VENV with $PY (from requirements.lock)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "uv==$UV_VERSION" ||
  die "could not install uv==$UV_VERSION from PyPI (package registry unreachable?)"

UV="$VENV/bin/uv"
export VIRTUAL_ENV="$VENV"
"$UV" pip sync --quiet --require-hashes "$LOCK" ||
  die "installing requirements.lock from PyPI failed (see the messages above for the package)"

# pyspark-client (pulled by the Spark provider) writes into the same pyspark/ directory as
# pyspark and can overwrite its files. Re-install pyspark, same pinned version, last.
pyspark_req="$(mktemp)"
trap 'rm -f "$pyspark_req"' EXIT
# The pyspark entry of the lock, with its hashes (continuation lines end with a backslash).
awk '/^pyspark==/{on=1} on{print; if ($0 !~ /\\$/) exit}' "$LOCK" > "$pyspark_req"
"$UV" pip install --quiet --reinstall --no-deps --require-hashes -r "$pyspark_req" ||
  die "re-installing $(head -c 40 "$pyspark_req") from PyPI failed"

# Make the project's packages (include, spark_apps, devstack, plugins) importable everywhere
# the venv's Python runs: Airflow components, the Spark driver, pytest.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT" > "$site/rtap_project.pth"

echo "$want" > "$STAMP"
echo "==> virtualenv ready"
