"""Matplotlib set-up shared by charts: headless backend and a house style."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def new_figure(width: float = 9.0, height: float = 3.6) -> tuple[Any, Any]:
    """A figure and one axes with a light grid."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(True, alpha=0.3)
    return fig, ax
