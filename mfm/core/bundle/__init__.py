"""The City bundle contract in one place (docs/bundle.md): its rules, its problems, its
checks and the reader.

- :mod:`.rules`: the layers (id column, columns, geometry), ``city.toml`` keys, label specs;
- :mod:`.problems`: :class:`Problem` (file, row, column, message) and the one-line error;
- :mod:`.validate`: every check, ``city.toml`` parsed once (:func:`read_city_toml`), and
  :func:`check_bundle` / :func:`validate_city`;
- :mod:`.city`: :class:`City`, which loads a bundle only after it passes.
"""

from mfm.core.bundle.city import City
from mfm.core.bundle.problems import Problem, ProblemReport, one_line_error
from mfm.core.bundle.rules import LAYER_RULES, LabelSpec
from mfm.core.bundle.validate import (
    ParsedBundle,
    check_bundle,
    check_image,
    label_frame,
    parse_crs,
    read_city_toml,
    validate_city,
)

__all__ = [
    "LAYER_RULES",
    "City",
    "LabelSpec",
    "ParsedBundle",
    "Problem",
    "ProblemReport",
    "check_bundle",
    "check_image",
    "label_frame",
    "one_line_error",
    "parse_crs",
    "read_city_toml",
    "validate_city",
]
