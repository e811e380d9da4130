"""Parse Prometheus text exposition into flat samples (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class PromSample:
    """One sample line: full sample name (with _total/_sum/_count/_bucket), labels, value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class Samples:
    """All samples of one scrape, indexed by sample name."""

    by_name: dict[str, list[PromSample]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Samples:
        """Parse exposition text; malformed text yields the samples parsed before the error."""
        out = cls()
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    out.by_name.setdefault(sample.name, []).append(
                        PromSample(sample.name, dict(sample.labels), float(sample.value))
                    )
        except ValueError:
            pass
        return out

    def names(self) -> Iterable[str]:
        return self.by_name.keys()

    def first(self, *names: str) -> list[PromSample]:
        """Samples of the first name in `names` that is present (metric names vary by version)."""
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
        return []

    def total(self, *names: str, **match: str) -> float | None:
        """Sum of the first present name's samples whose labels match; None if absent."""
        rows = self.first(*names)
        if not rows:
            return None
        return sum(row.value for row in rows if _matches(row, match))

    def sum_by(self, label: str, *names: str, **match: str) -> dict[str, float]:
        """Sum of the first present name's samples grouped by one label."""
        out: dict[str, float] = {}
        for row in self.first(*names):
            if _matches(row, match):
                key = row.labels.get(label, "")
                out[key] = out.get(key, 0.0) + row.value
        return out


def _matches(sample: PromSample, match: Mapping[str, str]) -> bool:
    """Every label in `match` has the given value on `sample`."""
    return all(sample.labels.get(label) == value for label, value in match.items())
