#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine: the system packages it needs (installed with
# apt-get only when missing), then a virtual environment in .venv holding the project (editable)
# with the toolkit (the torch extra) and its test extras. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# espeak-ng, flite, festival and its voices: the synthesizers of the default corpus; libportaudio2:
# microphone input; pulseaudio(-utils): the virtual microphone the tests record from; chromium: the
# headless browser the test of `asr serve`'s page runs
packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts libsndfile1 libportaudio2
          pulseaudio pulseaudio-utils chromium)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || packages+=(python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]} with apt-get"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[torch,test]'
# Fail here, not in the first test, when the installed torch and torchaudio do not load together.
versions="$(.venv/bin/python -c 'import torch, torchaudio, torchaudio.functional; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
echo "setup: ready ($versions)"
