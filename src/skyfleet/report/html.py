"""Build a self-contained HTML report: headings, tables, key figures and inline PNG charts."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
margin:2rem auto;max-width:1100px;color:#1d2433;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
.sub{color:#667}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #dde;padding:.25rem .6rem;text-align:right}th{background:#f3f5fa}
td:first-child,th:first-child{text-align:left}.kpis{display:flex;flex-wrap:wrap;gap:.8rem}
.kpi{background:#f3f5fa;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.kpi b{display:block;font-size:1.3rem}.kpi span{color:#667;font-size:.8rem}
img{max-width:100%;border:1px solid #eef;margin:.5rem 0}.note{color:#445;font-size:.9rem}
.bad{color:#b00020}.good{color:#0a7d32}
"""


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write a figure as a PNG file."""
    p = Path(path)
    p.write_bytes(figure_png(fig))
    return p


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return html.escape(f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}")
    return html.escape(str(v))


class HtmlReport:
    """Accumulates sections and writes one HTML file with everything inlined."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="sub">{html.escape(subtitle)}</p>')

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, cls: str = "note") -> None:
        self.parts.append(f'<p class="{cls}">{html.escape(text)}</p>')

    def kpis(self, items: Sequence[tuple[str, str]]) -> None:
        """Big numbers: (label, value) pairs."""
        cells = "".join(
            f'<div class="kpi"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>'
            for k, v in items
        )
        self.parts.append(f'<div class="kpis">{cells}</div>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Figure, alt: str) -> None:
        data = base64.b64encode(figure_png(fig)).decode()
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{_CSS}</style></head><body>{body}</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.render())
        return p
