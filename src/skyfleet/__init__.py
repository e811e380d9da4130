"""skyfleet: LLM inference across many clouds as one stable, cost-efficient service."""

__version__ = "0.1.0"
