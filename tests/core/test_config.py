import pytest

from mfm.core.config import make_config, plugin_options
from mfm.core.errors import ConfigError
from mfm.core.scales import Scale, parse_scales
from mfm.plugins.osm.modality import OsmOptions


def test_toml_then_cli_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'epochs = 7\nplugins = ["osm"]\nscales = "micro,local"\n[plugin.osm]\npooling = "cls"\n'
    )
    cfg = make_config(path, epochs=2, lr=None)
    assert cfg.epochs == 2 and cfg.plugins == ["osm"]
    assert cfg.scales == [Scale.MICRO, Scale.LOCAL]
    assert plugin_options(cfg, "plugin", "osm", OsmOptions).pooling == "cls"


def test_typo_names_key_and_suggests(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epoch = 3\n")
    with pytest.raises(
        ConfigError, match=r"run.toml: unknown option 'epoch'; did you mean 'epochs'"
    ):
        make_config(path)


def test_plugin_option_typo():
    cfg = make_config(plugin={"osm": {"modle": "x"}})
    with pytest.raises(ConfigError, match=r"\[plugin.osm\] option 'modle'.*valid options: model"):
        plugin_options(cfg, "plugin", "osm", OsmOptions)


def test_bad_values_and_scales():
    with pytest.raises(ConfigError, match="epochs"):
        make_config(epochs=0)
    with pytest.raises(ConfigError, match="unknown scale 'mezzo'"):
        parse_scales("micro,mezzo")
    assert parse_scales("global, micro") == [Scale.MICRO, Scale.GLOBAL]
    assert Scale.MICRO < Scale.LOCAL < Scale.MACRO < Scale.GLOBAL
