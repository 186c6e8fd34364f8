#!/usr/bin/env bash
# Prints the path of a Python 3.7 interpreter: $PYTHON, else python3.7 on PATH, else pyenv's newest 3.7.x.
set -u
is37() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 7) else 1)' 2>/dev/null; }
for cand in "${PYTHON:-}" "$(command -v python3.7 2>/dev/null)"; do
  if [ -n "$cand" ] && is37 "$cand"; then echo "$cand"; exit 0; fi
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for cand in $(ls -d "$root"/versions/3.7.* 2>/dev/null | sort -V -r); do
    if is37 "$cand/bin/python"; then echo "$cand/bin/python"; exit 0; fi
  done
fi
cat >&2 <<'MSG'
No Python 3.7 found. TensorFlow 1.15 needs Python 3.7. Either
  - set PYTHON=/path/to/python3.7 (e.g. make setup PYTHON=/usr/local/bin/python3.7), or
  - put python3.7 on PATH, or
  - install it with pyenv: pyenv install 3.7.16
MSG
exit 1
