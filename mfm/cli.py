"""The ``mfm`` command line: thin Typer wrappers over library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mfm.core.errors import MfmError

app = typer.Typer(
    help="UrbanMFM: multimodal, multiscale urban representation learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
city_app = typer.Typer(help="Make and check City bundles.", no_args_is_help=True)
app.add_typer(city_app, name="city")


@app.command()
def run(
    city: Annotated[Path | None, typer.Option(help="City bundle (default: synthetic)")] = None,
    out: Annotated[Path | None, typer.Option(help="Run dir (default: runs/<timestamp>)")] = None,
    plugins: Annotated[str | None, typer.Option(help="Comma-separated modality plugins")] = None,
    scales: Annotated[str | None, typer.Option(help="Comma-separated slots to keep")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML run config")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per stage")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Items per batch")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate")] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding width d")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cap on steps per epoch")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers for images")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of progress bars")] = False,
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
    if resume and cfg.out is None:
        raise MfmError("--resume needs --out RUN_DIR: the run to continue")
    if cfg.city is None:
        from mfm.cities.default import default_city

        cfg.city = default_city(cache_dir=cfg.cache_dir)
    run_pipeline(cfg, resume=resume)


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by mfm run")],
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
    ] = "counts,text,random",
    seed: Annotated[int, typer.Option(help="First seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Probe frozen embeddings on labelled tasks against baselines; writes RUN_DIR/eval/."""
    from rich.console import Console

    from mfm.eval import evaluate, list_tasks, rich_table, write_eval

    names = [task] if task or labels else list(list_tasks(run_dir))
    chosen = [b.strip() for b in baselines.split(",") if b.strip()]
    outputs = []
    for name in names or [None]:
        result = evaluate(
            run_dir,
            name,
            labels=labels,
            level=level,
            kind=kind,
            split=split,
            runs=runs,
            probe=probe,
            baselines=chosen,
            seed=seed,
        )
        write_eval(run_dir, result)
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
) -> None:
    """Write RUN_DIR/report/index.html (self-contained) and its PNGs."""
    from mfm.eval.report import report

    typer.echo(f"wrote {report(run_dir, task=task, ablation=ablation)}")


@app.command("plugins")
def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines")] = False,
) -> None:
    """List installed plugins, their modalities and objectives with their scale slot."""
    from mfm.core.plugins import load_registry

    registry = load_registry()
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


@city_app.command("validate")
def city_validate(root: Annotated[Path, typer.Argument(help="City bundle directory")]) -> None:
    """Check a City bundle and list every problem found (exit 2 if any)."""
    from mfm.core.validate import validate_city

    problems = validate_city(root)
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {root}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{root}: ok")


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    try:
        from mfm.core.plugins import load_registry, register_commands

        if len(sys.argv) > 1 and sys.argv[1] not in ("--help", "-h"):
            register_commands(load_registry(), app)
        app()
    except MfmError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; continue with --resume --out RUN_DIR", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
