"""Bar charts as SVG geometry, drawn by the templates (no chart library, no script). Pure.

Each chart comes in two widths, a wide one for screens and a narrow one for phones (the
stylesheet shows one): SVG text scales with its drawing, so one drawing cannot keep its
labels readable both at 1,000 and at 350 pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HEIGHT = 200
LEFT, BOTTOM, TOP = 48, 22, 10
WIDE, NARROW = 1000, 360


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # shown as the bar's tooltip


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    left: int
    bars: list[Bar]
    ticks: list[Tick]
    x_labels: list[XLabel]


@dataclass(frozen=True)
class Chart:
    wide: BarChart
    narrow: BarChart
    empty: bool


def nice_ceiling(value: float, *, whole: bool = False) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least `value`; for whole
    numbers (counts) an even integer, so the middle tick is whole too."""
    if value <= 1e-6:  # nothing worth a scale of its own
        return 2.0 if whole else 1.0
    if whole and value <= 10:
        return float(max(2, 2 * math.ceil(value / 2)))
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top: float = step * power
        if value <= top * (1 + 1e-9) and (not whole or (top == int(top) and int(top) % 2 == 0)):
            return top
    return 10 * power if not whole else float(max(2, 2 * math.ceil(value / 2)))


def _draw(values: Sequence[float], labels: Sequence[str], top: float, width: int,
          max_labels: int, unit: str, fmt: str) -> BarChart:
    plot_w, plot_h = width - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(values), 1)
    gap = min(slot * 0.25, 6.0)
    bars = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = plot_h * value / top
        bars.append(Bar(x=round(LEFT + i * slot + gap / 2, 2), y=round(TOP + plot_h - h, 2),
                        width=round(max(slot - gap, 1.0), 2), height=round(h, 2),
                        title=f"{label}: {fmt.format(value)}{unit}"))
    ticks = [Tick(y=round(TOP + plot_h * (1 - f), 2), label=fmt.format(top * f))
             for f in (0.0, 0.5, 1.0)]
    every = max(1, math.ceil(len(labels) / max_labels))
    x_labels = [XLabel(x=round(LEFT + (i + 0.5) * slot, 2), label=label)
                for i, label in enumerate(labels) if i % every == 0]
    return BarChart(width=width, height=HEIGHT, left=LEFT, bars=bars, ticks=ticks,
                    x_labels=x_labels)


def bar_chart(values: Sequence[float], labels: Sequence[str], *, unit: str = "",
              fmt: str = "{:g}", whole: bool = False) -> Chart:
    """One bar per value, a y axis with three ticks; seven x labels wide, four narrow."""
    top = nice_ceiling(max(values, default=0.0), whole=whole)
    return Chart(wide=_draw(values, labels, top, WIDE, 8, unit, fmt),
                 narrow=_draw(values, labels, top, NARROW, 4, unit, fmt),
                 empty=not any(v > 0 for v in values))
