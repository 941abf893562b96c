"""Small bar charts, laid out here and drawn by the templates as inline SVG (presentation
attributes only: no script, no style attribute, so the strict CSP holds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Bar", "Chart", "bar_chart"]

NO_VALUE = "\u2013"
"""What a missing value shows (an en dash)."""


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float | None
    shown: str
    """The value as text (the bar's tooltip)."""
    css: str = ""


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    top: str
    """The largest value as text (the chart's scale)."""
    empty: bool


def bar_chart(title: str, points: list[tuple[str, float | None]], *, width: int = 320,
              height: int = 80, unit: str = "", fmt: str = "{:g}",
              css: list[str] | None = None,
              show: Callable[[float], str] | None = None) -> Chart:
    """Bars for ``points`` (label, value; None draws nothing), scaled to the largest value;
    values shown as ``fmt`` + ``unit``, or by ``show``."""
    def shown(value: float) -> str:
        return show(value) if show is not None else fmt.format(value) + unit

    values = [v for _, v in points if v is not None]
    top = max(values) if values else 0.0
    slot = width / max(1, len(points))
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, (label, value) in enumerate(points):
        size = 0.0 if value is None or top <= 0 else max(1.0, (height - 2) * value / top)
        bars.append(Bar(x=round(index * slot + gap / 2, 2), y=round(height - size, 2),
                        width=round(max(1.0, slot - gap), 2), height=round(size, 2),
                        label=label, value=value,
                        shown=NO_VALUE if value is None else shown(value),
                        css=css[index] if css and index < len(css) else ""))
    return Chart(title=title, width=width, height=height, bars=bars,
                 top=shown(top) if values else NO_VALUE, empty=not values)
