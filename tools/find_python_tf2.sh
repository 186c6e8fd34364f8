#!/usr/bin/env bash
# Prints the path of a Python for efl's TensorFlow 2 stack (TensorFlow 2.21 has wheels for Python 3.10 to 3.13):
# $PYTHON, else the newest python3.13 ... python3.10 or python3 on PATH, else pyenv's newest 3.10 to 3.13.
set -u
MIN=10
MAX=13
fits() { "$1" -c "import sys; sys.exit(0 if sys.version_info[0] == 3 and $MIN <= sys.version_info[1] <= $MAX else 1)" \
  2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
  if fits "$PYTHON"; then echo "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a Python 3.$MIN to 3.$MAX, which TensorFlow 2.21 needs" >&2
  exit 1
fi
best= best_minor=0
for name in python3.13 python3.12 python3.11 python3.10 python3; do
  cand=$(command -v "$name" 2>/dev/null) || continue
  # A pyenv shim of a version that is not active is on PATH but does not run: fits() skips it.
  fits "$cand" || continue
  minor=$("$cand" -c 'import sys; print(sys.version_info[1])')
  if [ "$minor" -gt "$best_minor" ]; then best=$cand best_minor=$minor; fi
done
if [ -n "$best" ]; then echo "$best"; exit 0; fi
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for cand in $(ls -d "$root"/versions/3.* 2>/dev/null | sort -V -r); do
    if fits "$cand/bin/python"; then echo "$cand/bin/python"; exit 0; fi
  done
fi
cat >&2 <<MSG
No Python 3.$MIN to 3.$MAX found. efl's TensorFlow 2 stack (TensorFlow 2.21) needs one. Either
  - set PYTHON=/path/to/python3.11 (e.g. make setup TF=2 PYTHON=/usr/bin/python3.11), or
  - put python3.11 on PATH (Debian/Ubuntu: apt-get install python3.11 python3.11-venv), or
  - install it with pyenv: pyenv install 3.11
MSG
exit 1
