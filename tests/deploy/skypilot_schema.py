"""SkyPilot's own YAML schemas, vendored (data/skypilot_schemas.json, dumped 2026-12-03 from
skypilot 0.14.1 on PyPI: sky.utils.schemas.get_task_schema / get_resources_schema /
get_service_schema). The skypilot package installs here without a cloud but pulls ~460 MB of
dependencies, so CI validates against this copy with SkyPilot's own validator rules
(sky/utils/validator.py: Draft 7 plus case-(in)sensitive enums); test_plan_export.py also
runs `sky.Task.from_yaml` when skypilot is importable. Regenerate with skypilot installed:
    python -c "import json; from sky.utils import schemas as s; json.dump({'task':
      s.get_task_schema(), 'resources': s.get_resources_schema(), 'service':
      s.get_service_schema()}, open('tests/deploy/data/skypilot_schemas.json', 'w'), indent=1)"
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

DATA = json.loads((Path(__file__).parent / "data" / "skypilot_schemas.json").read_text())


def _ci_enum(_v: Any, enums: list[str], instance: Any, _s: Any) -> Iterator[Any]:
    if instance.lower() not in [e.lower() for e in enums]:
        yield jsonschema.ValidationError(f"{instance!r} is not one of {enums!r}")


def _cs_enum(_v: Any, enums: list[str], instance: Any, _s: Any) -> Iterator[Any]:
    if instance not in enums:
        yield jsonschema.ValidationError(f"{instance!r} is not one of {enums!r}")


Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    validators={"case_insensitive_enum": _ci_enum, "case_sensitive_enum": _cs_enum},
)


def validate_service_yaml(doc: dict[str, Any]) -> None:
    """Task schema for the document, resources and service schemas for their sections (as
    sky.Task.from_yaml_config does); raises jsonschema.ValidationError."""
    doc = {k: v for k, v in doc.items() if v is not None}
    Validator(DATA["task"]).validate(doc)
    Validator(DATA["resources"]).validate(doc["resources"])
    Validator(DATA["service"]).validate(doc["service"])
