"""mfm in five steps: a city, a run, its embeddings, a probe, and a second city.

    python examples/quickstart.py [--size small] [--epochs 10] [--workdir quickstart]

The ``# %%`` markers make it a notebook in VS Code / Jupyter (jupytext); every step also
runs as a plain script. ``tests/test_quickstart.py`` runs it on the tiny city.
"""

# %% 0. Settings
import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np

import mfm
from mfm.cities.synth import generate_city
from mfm.eval import evaluate

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--size", default="small", help="tiny | small | medium | large")
parser.add_argument("--epochs", type=int, default=None, help="per stage (default: config)")
parser.add_argument("--workdir", type=Path, default=Path("quickstart"))
args, _ = parser.parse_known_args()  # known only: a notebook kernel passes its own
work = args.workdir

# %% 1. A city bundle: the synthetic one here; `mfm city from-osm` builds your own
city = work / "city"
if not (city / "city.toml").exists():
    generate_city(city, size=args.size, seed=0)
print(mfm.City.load(city))

# %% 2. Train: every installed plugin the city supports, stage by stage
run_dir = work / "run"
if not (run_dir / "manifest.json").exists():
    mfm.run(mfm.make_config(city=city, out=run_dir, epochs=args.epochs, quiet=True))

# %% 3. Read the embeddings: GeoParquet, one row per region (and per POI)
regions = gpd.read_parquet(run_dir / "region_embeddings.parquet")
emb = np.stack(regions["embedding"].to_numpy())
print(regions[["region_id", "n_pois"]].head(), emb.shape)

# %% 4. Explore: the regions most similar to the first one (cosine similarity)
unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
similarity = unit @ unit[0]
nearest = np.argsort(-similarity)[1:6]
print("most like", regions["region_id"].iloc[0], ":", list(regions["region_id"].iloc[nearest]))

# %% 5. Probe a label: ridge on the embeddings against baselines, 10 seeded splits
result = evaluate(run_dir, "population")
for method, scores in result["results"].items():
    print(f"{method:>10}: R2 {scores['r2'][0]:.3f} ({scores['r2'][1]:.3f})")

# %% 6. Embed a second city with the trained model, and probe it the same way
other = work / "city-seed1"
if not (other / "city.toml").exists():
    generate_city(other, size=args.size, seed=1)
moved = mfm.load(run_dir).embed(other, work / "embedded", overwrite=True, quiet=True)
again = evaluate(moved.out, "population", baselines=("untrained", "counts"))
print("second city, transferred model: R2", again["results"]["mfm"]["r2"])
