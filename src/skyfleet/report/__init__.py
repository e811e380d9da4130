"""Self-contained HTML reports with PNG charts (matplotlib, Agg), shared by every command."""

from skyfleet.report.html import HtmlReport, figure_png, save_png

__all__ = ["HtmlReport", "figure_png", "save_png"]
