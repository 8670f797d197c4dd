"""The run configuration: a pydantic model, loadable from TOML, overridable from the CLI."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mfm.core.errors import ConfigError
from mfm.core.scales import Scale, parse_scales


class RunConfig(BaseModel):
    """Everything that defines a run. Unknown keys are an error (``extra="forbid"``).

    Per-plugin and per-objective options live in ``plugin.<name>`` and
    ``objective.<name>`` tables and are checked by that plugin's ``Options`` model.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    city: Path | None = None  # None: the small synthetic city, generated and cached
    out: Path | None = None  # None: runs/<timestamp>
    plugins: list[str] | None = None  # None: every installed modality plugin
    scales: list[Scale] = Field(default_factory=lambda: list(Scale))
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dim: int = Field(256, gt=0)
    epochs: int = Field(10, gt=0)
    min_steps: int = Field(
        0, ge=0, description="stages with fewer optimizer steps over `epochs` get more epochs"
    )
    batch_size: int = Field(256, gt=1)
    lr: float = Field(1e-3, gt=0)
    warmup: float = Field(0.1, ge=0, lt=1)
    earlier_lr: float = Field(
        0.1, gt=0, le=1, description="lr factor for modules an earlier stage trained"
    )
    weight_decay: float = Field(0.0, ge=0)
    contrast_head: bool = Field(
        True,
        description="each objective contrasts through its own head (SimCLR); "
        "embeddings are exported before it",
    )
    max_steps_per_epoch: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    cache_dir: Path | None = None  # None: $MFM_CACHE or ~/.cache/mfm
    quiet: bool = False
    plugin: dict[str, dict[str, Any]] = Field(default_factory=dict)
    objective: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("scales", mode="before")
    @classmethod
    def _parse_scales(cls, value: Any) -> Any:
        if isinstance(value, (str, list)) and all(isinstance(v, str) for v in value):
            return parse_scales(value)
        return value

    @field_validator("plugins", mode="before")
    @classmethod
    def _parse_plugins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), RunConfig.model_fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see `mfm run --help`"
        return f"{source}: unknown option {key!r}{hint}"
    return f"{source}: option {key!r}: {err['msg']}"


def make_config(path: Path | None = None, **overrides: Any) -> RunConfig:
    """Build a RunConfig from an optional TOML file, then explicit overrides (None = unset)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; check the --config path") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, number or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def config_toml(config: RunConfig) -> str:
    """The resolved config as TOML that ``--config`` reads back (unset values left out)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["scales"] = [s.label for s in config.scales]
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]

    def tables(prefix: str, value: dict[str, Any]) -> None:
        flat = {k: v for k, v in value.items() if not isinstance(v, dict)}
        if flat:
            lines.extend(["", f"[{prefix}]"])
            lines.extend(f"{k} = {toml_value(v)}" for k, v in flat.items())
        for k, v in value.items():
            if isinstance(v, dict):
                tables(f"{prefix}.{json.dumps(k) if not k.isidentifier() else k}", v)

    for key in ("plugin", "objective"):
        for name, opts in data.get(key, {}).items():
            tables(f"{key}.{name}", opts)
    return "\n".join(lines) + "\n"


def plugin_options(config: RunConfig, table: str, name: str, model: type[BaseModel]) -> BaseModel:
    """Validate ``[plugin.<name>]`` or ``[objective.<name>]`` with the owner's Options model."""
    raw = getattr(config, table).get(name, {})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        fields = ", ".join(model.model_fields) or "none"
        raise ConfigError(
            f"[{table}.{name}] option {key!r}: {err['msg']}; valid options: {fields}"
        ) from None
