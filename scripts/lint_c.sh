#!/usr/bin/env bash
# C hygiene of csrc/ (docs/reliability.md, guarantee 8):
#   1. every source compiles warning-free with gcc and with clang under
#      -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror (-O2, so that the
#      flow-based warnings run too);
#   2. clang-tidy, configured by .clang-tidy at the top of the repository,
#      reports nothing.
# Needs gcc, clang and clang-tidy (Debian: apt-get install gcc clang
# clang-tidy).  LINT_ALLOW_MISSING=1 skips a missing tool instead of
# failing.  PYTHON picks the interpreter whose headers are used.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYINC="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
FLAGS=(-std=c11 -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror
       -fPIC -Icsrc "-I$PYINC")
SOURCES=(csrc/*/*.c)
failed=0

need() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [[ "${LINT_ALLOW_MISSING:-0}" == 1 ]]; then
        echo "lint_c.sh: $1 not found, skipped" >&2
        return 1
    fi
    echo "lint_c.sh: $1 not found (apt-get install $2)" >&2
    exit 2
}

for cc in gcc clang; do
    need "$cc" "$cc" || continue
    echo "lint_c.sh: $cc $("$cc" -dumpversion) ${FLAGS[*]:0:7}"
    for src in "${SOURCES[@]}"; do
        if ! "$cc" "${FLAGS[@]}" -c "$src" -o /dev/null; then
            echo "lint_c.sh: $cc: $src" >&2
            failed=1
        fi
    done
done

if need clang-tidy clang-tidy; then
    echo "lint_c.sh: clang-tidy ($(clang-tidy --version | grep -o 'version [0-9.]*'))"
    if ! clang-tidy --quiet "${SOURCES[@]}" -- -std=c11 -Icsrc "-I$PYINC" \
            2> >(grep -v -E "^[0-9]+ warnings? (and [0-9]+ errors? )?generated" >&2); then
        failed=1
    fi
fi

if [[ $failed -ne 0 ]]; then
    echo "lint_c.sh: FAILED" >&2
    exit 1
fi
echo "lint_c.sh: clean"
