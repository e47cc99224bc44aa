"""Load, check and normalise gateway configs (see :mod:`fastgw.config.schema` for the keys)."""

from fastgw.config.errors import ConfigError
from fastgw.config.loader import DEFAULT_CONFIG_YAML, check_file, default_config, load_file, load_text

__all__ = ["DEFAULT_CONFIG_YAML", "ConfigError", "check_file", "default_config", "load_file", "load_text"]
