"""mfm-terrain: a region-level terrain view from a DEM and the MACRO objective ``terrain``.

An example third-party plugin for mfm (see docs/plugins.md in urban-mfm). This module
holds only the hook implementations; the classes live in sibling modules.
"""

# No ``from __future__ import annotations`` here: Typer reads the command signatures.
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import mfm
import typer

from mfm_terrain.modality import TerrainModality
from mfm_terrain.objective import TerrainObjective


@mfm.hookimpl
def register_modalities(register: Callable[[type[mfm.Modality]], None]) -> None:
    """Register the terrain modality."""
    register(TerrainModality)


@mfm.hookimpl
def register_objectives(register: Callable[[type[mfm.Objective]], None]) -> None:
    """Register the terrain objective (MACRO)."""
    register(TerrainObjective)


@mfm.hookimpl
def register_commands(app: typer.Typer) -> None:
    """Add ``mfm terrain-info`` and ``mfm terrain-synth-dem``."""

    @app.command("terrain-info")
    def terrain_info(path: Annotated[Path, typer.Argument(help="DEM GeoTIFF")]) -> None:
        """Print what the terrain plugin sees in a DEM (JSON)."""
        from mfm_terrain.dem import describe_dem

        typer.echo(json.dumps(describe_dem(path), indent=2))

    @app.command("terrain-synth-dem")
    def terrain_synth_dem(
        city: Annotated[Path, typer.Argument(help="City bundle directory")],
        out: Annotated[Path | None, typer.Option(help="Output (default: <city>/dem.tif)")] = None,
        pixel: Annotated[float, typer.Option(help="Pixel size in metres")] = 10.0,
    ) -> None:
        """Write a synthetic hill DEM over a city's regions (the synthetic city has none)."""
        from mfm_terrain.dem import write_city_dem

        typer.echo(f"wrote {write_city_dem(city, out, pixel)}")
