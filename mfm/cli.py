"""The ``mfm`` command line: thin Typer wrappers over library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mfm.core.config import RunConfig
from mfm.core.errors import MfmError

# what an unset option means (the run config's defaults), shown by --help
_DEFAULTS = {name: str(field.default) for name, field in RunConfig.model_fields.items()}

app = typer.Typer(
    help="UrbanMFM: multimodal, multiscale urban representation learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
city_app = typer.Typer(help="Make and check City bundles.", no_args_is_help=True)
app.add_typer(city_app, name="city")


def _print_version(value: bool) -> None:
    if value:
        from mfm import __version__

        typer.echo(f"mfm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    """UrbanMFM: multimodal, multiscale urban representation learning."""


@app.command()
def run(
    city: Annotated[Path | None, typer.Option(help="City bundle (default: synthetic)")] = None,
    out: Annotated[Path | None, typer.Option(help="Run dir (default: runs/<timestamp>)")] = None,
    plugins: Annotated[str | None, typer.Option(help="Comma-separated modality plugins")] = None,
    scales: Annotated[str | None, typer.Option(help="Comma-separated slots to keep")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML run config")] = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda", show_default=_DEFAULTS["device"])
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs per stage", show_default=_DEFAULTS["epochs"])
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Items per batch", show_default=_DEFAULTS["batch_size"])
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate", show_default=_DEFAULTS["lr"])
    ] = None,
    dim: Annotated[
        int | None, typer.Option(help="Embedding width d", show_default=_DEFAULTS["dim"])
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed", show_default=_DEFAULTS["seed"])
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap on steps per epoch")] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(help="DataLoader workers for images", show_default=_DEFAULTS["num_workers"]),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run that --out holds (only an mfm run folder)")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of progress bars")] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as TOML and stop")
    ] = False,
) -> None:
    """Train UrbanMFM on a city and write POI and region embeddings."""
    from mfm.core.config import make_config
    from mfm.core.pipeline import run as run_pipeline

    cfg = make_config(
        config,
        city=city,
        out=out,
        plugins=plugins,
        scales=scales,
        device=device,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        dim=dim,
        seed=seed,
        max_steps_per_epoch=max_steps,
        num_workers=num_workers,
        quiet=quiet or None,
    )
    if print_config:
        from mfm.core.config import config_toml

        typer.echo(config_toml(cfg), nl=False)
        return
    if resume and cfg.out is None:
        raise MfmError("--resume needs --out RUN_DIR: the run to continue")
    if resume and cfg.city is None:
        from mfm.core.rundir import recorded_city

        cfg.city = recorded_city(cfg.out)  # the city the run was trained on
    if cfg.city is None:
        from mfm.cities.default import default_city

        cfg.city = default_city(cache_dir=cfg.cache_dir)
    if cfg.out is None:
        from mfm.core.rundir import default_out

        cfg.out = default_out()
    try:
        run_pipeline(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:  # Typer would turn it into a bare exit 130
        typer.echo(f"interrupted; continue with: mfm run --out {cfg.out} --resume", err=True)
        raise typer.Exit(130) from None


@app.command("embed")
def embed_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by mfm run")],
    city: Annotated[Path, typer.Option(help="The city bundle to embed")],
    out: Annotated[Path, typer.Option(help="Directory to write the embeddings into")],
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda (default: the run's)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace what --out holds")] = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of progress bars")] = False,
) -> None:
    """Embed another city with a trained run's model (same outputs as mfm run)."""
    from mfm.core.trained import load

    load(run_dir).embed(city, out, device=device, overwrite=overwrite, quiet=quiet)


@app.command("eval")
def eval_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run directory written by mfm run")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Score this table instead of a run: .parquet, .csv or .npy (--ids)"),
    ] = None,
    ids: Annotated[Path | None, typer.Option(help="Ids of a .npy's rows (one per line)")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Id column of --embeddings (default: region_id/poi_id)")
    ] = None,
    column: Annotated[
        str | None, typer.Option(help="List column of --embeddings holding the vectors")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Labelled task of the city (default: all)")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="A labels CSV outside the bundle")] = None,
    level: Annotated[str | None, typer.Option(help="region | poi (with --labels)")] = None,
    kind: Annotated[
        str | None, typer.Option(help="regression | classification (with --labels)")
    ] = None,
    split: Annotated[str, typer.Option(help="random | spatial")] = "random",
    runs: Annotated[int, typer.Option(help="Repetitions (seeds)")] = 10,
    probe: Annotated[str, typer.Option(help="ridge | rf | mlp")] = "ridge",
    baselines: Annotated[
        str, typer.Option(help="Comma-separated baselines")
    ] = "raw,untrained,counts,text,random",
    seed: Annotated[int, typer.Option(help="First seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    city: Annotated[
        Path | None,
        typer.Option(help="The city bundle (--embeddings), or the run's if it moved"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for <task>.json/.md (default: RUN_DIR/eval, FILE-eval)"),
    ] = None,
) -> None:
    """Probe a run's embeddings (or any table: --embeddings FILE --city BUNDLE) on labelled
    tasks against baselines; writes RUN_DIR/eval/ (or FILE-eval/)."""
    from rich.console import Console

    from mfm.eval import (
        embeddings_city,
        evaluate,
        evaluate_embeddings,
        list_tasks,
        read_embedding_table,
        rich_table,
        write_eval,
    )

    if (run_dir is None) == (embeddings is None):
        raise MfmError(
            "pass either RUN_DIR or --embeddings FILE (with --city BUNDLE), not "
            + ("both" if run_dir is not None else "neither")
        )
    chosen = [b.strip() for b in baselines.split(",") if b.strip()]
    opts = {"labels": labels, "level": level, "kind": kind, "split": split, "runs": runs}
    opts |= {"probe": probe, "baselines": chosen, "seed": seed}
    if embeddings is not None:
        table = read_embedding_table(embeddings, ids=ids, id_column=id_column, column=column)
        bundle = embeddings_city(table, city)
        names = [task] if task or labels else table.tasks(bundle)
        if not names and bundle.labels:
            raise MfmError(
                f"city {bundle.name!r} has no {table.level(bundle)}-level task for "
                f"{embeddings}; pass --labels FILE.csv"
            )
        dest = out or embeddings.with_name(f"{embeddings.stem}-eval")

        def score(name: str | None) -> dict[str, object]:
            return evaluate_embeddings(table, bundle, name, **opts)
    else:
        assert run_dir is not None
        flags = (("--ids", ids), ("--id-column", id_column), ("--column", column))
        given = [flag for flag, value in flags if value]
        if given:
            raise MfmError(f"{given[0]} goes with --embeddings FILE, not with a RUN_DIR")
        names = [task] if task or labels else list(list_tasks(run_dir, city))
        dest = out

        def score(name: str | None) -> dict[str, object]:
            return evaluate(run_dir, name, city=city, **opts)

    outputs = []
    for name in names or [None]:
        result = score(name)
        write_eval(run_dir, result, out=dest)
        outputs.append(result)
        if not as_json:
            Console().print(rich_table(result))
    if as_json:
        typer.echo(json.dumps(outputs[0] if len(outputs) == 1 else outputs, indent=2))


@app.command("ablate")
def ablate_command(
    out: Annotated[Path, typer.Option(help="Directory for the variant runs and ablation.*")],
    city: Annotated[Path | None, typer.Option(help="City bundle (default: synthetic)")] = None,
    drop: Annotated[str | None, typer.Option(help="plugins | scales")] = None,
    variants: Annotated[str | None, typer.Option(help="Plugin sets: 'osm;osm,svi'")] = None,
    base_plugins: Annotated[str | None, typer.Option(help="Full plugin set for --drop")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: all)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per stage")] = None,
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
    runs: Annotated[int, typer.Option(help="Eval repetitions")] = 10,
    split: Annotated[str, typer.Option(help="random | spatial")] = "random",
    probe: Annotated[str, typer.Option(help="ridge | rf | mlp")] = "ridge",
    config: Annotated[Path | None, typer.Option(help="TOML run config for every variant")] = None,
) -> None:
    """Train and evaluate a matrix of runs; write OUT/ablation.{md,csv,png}."""
    from mfm.eval.ablate import ablate

    ablate(
        city,
        out,
        drop=drop,
        variants=variants,
        base_plugins=base_plugins,
        tasks=tasks,
        epochs=epochs,
        seed=seed,
        runs=runs,
        split=split,
        probe=probe,
        config=config,
    )
    typer.echo(f"wrote {out / 'ablation.md'}, ablation.csv and ablation.png")


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by mfm run")],
    task: Annotated[
        str | None, typer.Option(help="Task to map (default: first regression)")
    ] = None,
    ablation: Annotated[Path | None, typer.Option(help="mfm ablate output dir to embed")] = None,
    city: Annotated[
        Path | None, typer.Option(help="The run's city bundle, if it moved (default: recorded)")
    ] = None,
) -> None:
    """Write RUN_DIR/report/index.html (self-contained) and its PNGs."""
    from mfm.eval.report import report

    typer.echo(f"wrote {report(run_dir, task=task, ablation=ablation, city=city)}")


@app.command("plugins")
def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines")] = False,
) -> None:
    """List installed plugins, their modalities and objectives with their scale slot."""
    from mfm.core.plugin_index import read_index

    index = read_index()  # written by main() when the plugins were loaded: no torch import
    if index is not None:
        records = index["plugins"]
    else:
        from mfm.core.plugins import load_registry

        registry = load_registry(require=())  # a broken plugin is a warning, not the end
        records = [p.as_json() for p in registry.plugins.values()]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "package", "modalities", "objectives (scale)")
    for r in records:
        objs = ", ".join(f"{o['name']} ({o['scale']})" for o in r["objectives"])
        table.add_row(r["name"], r["version"], r["package"], ", ".join(r["modalities"]), objs)
    Console().print(table)


@city_app.command("synth")
def city_synth(
    out: Annotated[Path, typer.Option(help="Directory to create")],
    size: Annotated[str, typer.Option(help="tiny | small | medium | large")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Generate a synthetic city with all five modalities and labels."""
    from mfm.cities.synth import generate_city

    if size not in ("tiny", "small", "medium", "large"):
        raise MfmError(f"--size {size!r}: choose tiny, small, medium or large")
    path = generate_city(out, size=size, seed=seed, progress=True)  # type: ignore[arg-type]
    typer.echo(f"wrote {path}")


def _summary(summary: dict, as_json: bool) -> None:
    """Print an import's summary: JSON, or one ``key: value`` line each."""
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        typer.echo(f"{key}: {value}")


@city_app.command("from-osm")
def city_from_osm(
    pbf: Annotated[Path, typer.Argument(help="OpenStreetMap extract (.osm.pbf)")],
    out: Annotated[Path, typer.Option(help="Bundle directory to create")],
    regions: Annotated[
        str, typer.Option(help="roads (road-network blocks) | h3:RES | boundary file")
    ] = "roads",
    bbox: Annotated[str | None, typer.Option(help="Keep only W,S,E,N (degrees)")] = None,
    name: Annotated[str | None, typer.Option(help="Bundle name (default: file name)")] = None,
    region_id_column: Annotated[
        str | None, typer.Option(help="Id column of a boundary file")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Make a City bundle (POIs, footprints, roads, regions) from an OSM extract."""
    from mfm.cities.from_osm import from_osm

    summary = from_osm(
        pbf,
        out,
        regions=regions,
        bbox=bbox,
        name=name,
        region_id_column=region_id_column,
        progress=not as_json,
    )
    _summary(summary, as_json)


DropInvalid = Annotated[
    bool, typer.Option("--drop-invalid", help="Skip bad rows (counted) instead of failing")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON")]
Bundle = Annotated[Path, typer.Argument(help="City bundle directory")]


@city_app.command("add-svi")
def city_add_svi(
    root: Bundle,
    images: Annotated[Path, typer.Option(help="Folder holding the street-view images")],
    index: Annotated[Path, typer.Option(help="CSV/Parquet: one row per point, lat, lon, 4 files")],
    lat_column: Annotated[str, typer.Option(help="Latitude column")] = "lat",
    lon_column: Annotated[str, typer.Option(help="Longitude column")] = "lon",
    id_column: Annotated[str | None, typer.Option(help="Point id column (default: row)")] = None,
    east_column: Annotated[str, typer.Option(help="East-facing image column")] = "east",
    south_column: Annotated[str, typer.Option(help="South-facing image column")] = "south",
    west_column: Annotated[str, typer.Option(help="West-facing image column")] = "west",
    north_column: Annotated[str, typer.Option(help="North-facing image column")] = "north",
    drop_invalid: DropInvalid = False,
    as_json: AsJson = False,
) -> None:
    """Import street-view points (four images each) as the svi layer."""
    from mfm.cities.add_svi import add_svi

    directions = {
        "east": east_column, "south": south_column, "west": west_column, "north": north_column
    }  # fmt: skip
    summary = add_svi(
        root,
        images,
        index,
        lat=lat_column,
        lon=lon_column,
        id_column=id_column,
        directions=directions,
        drop_invalid=drop_invalid,
        progress=not as_json,
    )
    _summary(summary, as_json)


@city_app.command("add-satellite")
def city_add_satellite(
    root: Bundle,
    raster: Annotated[Path | None, typer.Option(help="GeoTIFF to crop one tile per region")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Folder of <region_id>.png/.jpg/.tif tiles")
    ] = None,
    size: Annotated[int, typer.Option(help="Tile side in pixels (--raster)")] = 256,
    mask: Annotated[bool, typer.Option(help="Black out pixels outside the region")] = False,
    drop_invalid: DropInvalid = False,
    as_json: AsJson = False,
) -> None:
    """Import satellite tiles, one per region, as the satellite layer."""
    from mfm.cities.add_satellite import add_satellite

    summary = add_satellite(
        root,
        raster,
        images,
        size=size,
        mask=mask,
        drop_invalid=drop_invalid,
        progress=not as_json,
    )
    _summary(summary, as_json)


@city_app.command("add-trajectories")
def city_add_trajectories(
    root: Bundle,
    file: Annotated[Path, typer.Argument(help="CSV/Parquet of GPS points")],
    traj_id_column: Annotated[str, typer.Option(help="Trajectory id column")] = "traj_id",
    time_column: Annotated[str, typer.Option(help="Timestamp or sequence column")] = "t",
    lat_column: Annotated[str, typer.Option(help="Latitude column")] = "lat",
    lon_column: Annotated[str, typer.Option(help="Longitude column")] = "lon",
    drop_invalid: DropInvalid = False,
    as_json: AsJson = False,
) -> None:
    """Import GPS trajectories as the trajectories layer."""
    from mfm.cities.add_trajectories import add_trajectories

    summary = add_trajectories(
        root,
        file,
        traj_id=traj_id_column,
        time=time_column,
        lat=lat_column,
        lon=lon_column,
        drop_invalid=drop_invalid,
    )
    _summary(summary, as_json)


@city_app.command("add-labels")
def city_add_labels(
    root: Bundle,
    file: Annotated[Path, typer.Argument(help="Table keyed by id, or a geometry file")],
    name: Annotated[str, typer.Option(help="Task name (letters, digits, _ and -)")],
    column: Annotated[str, typer.Option(help="Column holding the value or class")],
    id_column: Annotated[str | None, typer.Option(help="Id column (join by id)")] = None,
    level: Annotated[str, typer.Option(help="region | poi")] = "region",
    kind: Annotated[
        str | None, typer.Option(help="regression | classification (default: inferred)")
    ] = None,
    aggregate: Annotated[
        str | None, typer.Option(help="sum | mean | majority (overlay, or repeated ids)")
    ] = None,
    drop_invalid: DropInvalid = False,
    as_json: AsJson = False,
) -> None:
    """Add a labelled task by id, or by area-weighted overlay of a geometry file."""
    from mfm.cities.add_labels import add_labels

    summary = add_labels(
        root,
        file,
        name=name,
        column=column,
        id_column=id_column,
        level=level,
        kind=kind,
        aggregate=aggregate,
        drop_invalid=drop_invalid,
    )
    _summary(summary, as_json)


@city_app.command("label-from-tag")
def city_label_from_tag(
    root: Bundle,
    tag: Annotated[str, typer.Option(help="OSM tag key, e.g. building")],
    name: Annotated[str, typer.Option(help="Task name")],
    ignore: Annotated[str, typer.Option(help="Comma-separated values left unlabelled")] = "yes",
    min_count: Annotated[int, typer.Option(help="Classes with fewer POIs get no label")] = 10,
    as_json: AsJson = False,
) -> None:
    """Make a POI class label from an OSM tag and remove the tag from the POI text."""
    from mfm.cities.add_labels import label_from_tag

    values = [v.strip() for v in ignore.split(",") if v.strip()]
    summary = label_from_tag(root, tag, name=name, ignore=values, min_count=min_count)
    _summary(summary, as_json)


@city_app.command("info")
def city_info_command(
    root: Bundle,
    as_json: AsJson = False,
    map_png: Annotated[
        Path | None, typer.Option("--map", help="Also draw regions, roads and POIs to a PNG")
    ] = None,
) -> None:
    """Summarise a bundle: layers, counts, CRS, extent and labels."""
    from mfm.cities.info import city_info, city_map, info_table
    from mfm.core.bundle.city import City

    city = City.load(root)  # validated once for the summary and the map
    info = city_info(city)
    if map_png is not None:
        info["map"] = str(city_map(city, map_png))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console

    Console().print(info_table(info))


@city_app.command("validate")
def city_validate(root: Annotated[Path, typer.Argument(help="City bundle directory")]) -> None:
    """Check a City bundle and list every problem found (exit 2 if any)."""
    from mfm.core.bundle.validate import validate_city

    problems = validate_city(root)
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {root}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{root}: ok")


def _plugin_commands(first: str) -> None:
    """Add the plugins' commands: the real ones for a command that runs; for ``--help``,
    ``--version`` and ``plugins``, what the plugin index remembers (no plugin import)."""
    from mfm.core.plugin_index import read_index, signature, write_index

    if first in ("--help", "-h", "--version", "plugins"):
        index = read_index()
        if index is not None:
            for owner, commands in index["commands"].items():
                for c in commands:
                    help_text = f"{c['help']} (plugin {owner})".strip()
                    panel = "Plugin commands"
                    app.command(c["name"], help=help_text, rich_help_panel=panel)(_remembered)
            return
        if first == "--version":
            return
    from mfm.core.plugins import load_registry, register_commands

    registry = load_registry(require=())
    commands = register_commands(registry, app)
    if {row[0] for row in signature()} <= set(registry.plugins):  # every plugin loaded
        write_index([p.as_json() for p in registry.plugins.values()], commands)


def _remembered() -> None:
    """Stands in for a plugin command in ``mfm --help`` (never run: see _plugin_commands)."""


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    try:
        _plugin_commands(sys.argv[1] if len(sys.argv) > 1 else "--help")
        app()
    except MfmError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; continue with --resume --out RUN_DIR", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
