"""Read a YAML (or JSON) file for any of skyfleet's inputs, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from skyfleet.errors import ConfigError


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file, or ConfigError naming the file and what it was meant to hold."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
