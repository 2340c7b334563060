#!/usr/bin/env bash
# Regenerate tests/data/lmplz/order{2,3}.arpa with KenLM's own estimator, lmplz, so that
# tests/test_ngram.py can check 'asr lm build' against it on the same text.
# lmplz is not on PyPI or in Debian as a program; this builds it from the kenlm source
# distribution on PyPI (needs cmake, g++ and Debian's libboost-program-options-dev,
# libboost-system-dev, libboost-thread-dev, libboost-test-dev, zlib1g-dev). Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${KENLM_BUILD_DIR:-/tmp/kenlm-build}"
mkdir -p "$work"
if [ ! -x "$work/build/bin/lmplz" ]; then
  url=$(curl -sSf https://pypi.org/pypi/kenlm/json | python3 -c \
    'import json, sys; print([u["url"] for u in json.load(sys.stdin)["releases"]["0.3.0"] if u["packagetype"] == "sdist"][0])')
  curl -sSfL -o "$work/kenlm-0.3.0.tar.gz" "$url"
  tar xzf "$work"/kenlm-0.3.0.tar.gz -C "$work"
  cmake -S "$work/kenlm-0.3.0" -B "$work/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$work/build" --target lmplz -j "$(nproc)"
fi
for order in 2 3; do
  "$work/build/bin/lmplz" -o "$order" --discount_fallback --skip_symbols \
    < tests/data/lmplz/text.txt > "tests/data/lmplz/order$order.arpa"
done
echo "wrote tests/data/lmplz/order2.arpa and order3.arpa with $("$work/build/bin/lmplz" --help 2>&1 | head -1 || true)"
