#!/usr/bin/env bash
# Set up: Fashion-MNIST from Debian's package where apt exists, then a project virtual environment
# (.venv, so a system Python that refuses pip installs -- PEP 668, Debian 12, Ubuntu 24.04 -- is
# never touched) holding this package and its test tools.  Run it again at any time: it reuses
# what is there.  Afterwards: .venv/bin/python scripts/train.py, or `. .venv/bin/activate` first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() {  # apt_install PACKAGE...: quietly, updating the package lists once if needed
  command -v apt-get >/dev/null || return 1
  $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$@" >/dev/null 2>&1; }
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  apt_install dataset-fashion-mnist \
    || echo "setup: could not install dataset-fashion-mnist; scripts/train.py will look elsewhere or download" >&2
fi

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; install Python 3.10 or newer" >&2; exit 1; }
if ! "$VENV/bin/python" -c "" 2>/dev/null; then
  if ! "$PYTHON" -m venv --clear "$VENV" 2>/dev/null; then
    # Debian and Ubuntu ship venv's pip apart from Python: python3-venv (python3.X-venv)
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    echo "setup: $PYTHON cannot make a virtual environment; installing python$version-venv" >&2
    apt_install "python$version-venv" || apt_install python3-venv || {
      echo "setup: could not install python$version-venv; install it (apt-get install python3-venv) and run this again" >&2
      exit 1
    }
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
# The fused loops (notation/runtime/fused.c: Adam's update in one pass, a pool's (18) and (19) without numpy's cost per
# row) and the flags that hand work between the two threads (notation/runtime/crew.py), where a C compiler is at
# hand; without it numpy's passes run, to the same bits, and queues carry the hand-offs.
# -ffp-contract=off: no fused multiply-add, so the bits are numpy's
if command -v cc >/dev/null; then
  source_hash="$("$VENV/bin/python" -c 'from notation.runtime.fused import source_hash; print(source_hash())')"
  # built under a temporary name, its SHA-256 written beside it (notation/runtime/fused.py maps only a library
  # that matches it), then both renamed: an interrupted build or a full disk never leaves a short library
  tmp="notation/runtime/.fused.$$.so"
  trap 'rm -f "$tmp" "$tmp.sha256"' EXIT
  if cc -O3 -fPIC -shared -pthread -ffp-contract=off -fno-math-errno -DFUSED_SOURCE="${source_hash}ULL" \
        -o "$tmp" notation/runtime/fused.c \
     && "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        "$tmp" > "$tmp.sha256" \
     && mv -f "$tmp.sha256" notation/runtime/_fused.so.sha256 && mv -f "$tmp" notation/runtime/_fused.so; then :
  else
    echo "setup: could not build notation/runtime/_fused.so; numpy's passes run instead (the same results, slower)" >&2
  fi
else
  echo "setup: no C compiler (cc); numpy's passes run instead of notation/runtime/fused.c (the same results, slower)." \
       "For the faster one: apt-get install gcc, then run this again" >&2
fi
echo "setup: done; the project's Python is $VENV/bin/python (or run: . $VENV/bin/activate)" >&2
