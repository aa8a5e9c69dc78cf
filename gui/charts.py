"""A small grouped bar chart drawn with QPainter.

QtCharts is not part of PySide6-Essentials (the only Qt the appliance ships), and an approver needs
no more than bars: per-document accuracy of the serving memory next to the candidate's, or the
per-document change. Values may be negative (deltas); the zero line is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float | None]  # None: no value for that label (drawn as nothing)
    color: str


class BarChart(QWidget):
    """Grouped bars, one group per label; ``value_format`` renders the axis and bar labels."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.labels: list[str] = []
        self.series: list[Series] = []
        self.low, self.high = 0.0, 1.0
        self.value_format = "{:.0%}"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(180)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(480, 220)

    def set_data(self, labels: list[str], series: list[Series], low: float | None = None, high: float | None = None,
                 value_format: str = "{:.0%}") -> None:
        values = [v for s in series for v in s.values if v is not None]
        self.labels, self.series, self.value_format = labels, series, value_format
        self.low = min([0.0, *values]) if low is None else low
        self.high = max([0.0, *values]) if high is None else high
        if self.high - self.low < 1e-9:
            self.high = self.low + 1.0
        self.update()

    def clear(self) -> None:
        self.set_data([], [])

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = QFontMetrics(self.font())
        w, h = self.width(), self.height()
        top = fm.height() * 2 + 6
        bottom = fm.height() + 10
        left = fm.horizontalAdvance("-100%") + 10
        plot = QRectF(left, top, max(10, w - left - 10), max(10, h - top - bottom))
        p.setPen(pal.text().color())
        p.drawText(QRectF(0, 2, w, fm.height()), Qt.AlignmentFlag.AlignHCenter, self.title)
        # legend
        x = left
        for s in self.series:
            p.fillRect(QRectF(x, fm.height() + 6, 10, 10), QColor(s.color))
            p.drawText(int(x + 14), int(fm.height() + 6 + fm.ascent() - 2), s.name)
            x += 24 + fm.horizontalAdvance(s.name)
        if not self.labels:
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "no data")
            return

        def y_of(v: float) -> float:
            return plot.bottom() - (v - self.low) / (self.high - self.low) * plot.height()

        grid = QPen(pal.mid().color())
        grid.setStyle(Qt.PenStyle.DotLine)
        for v in (self.low, (self.low + self.high) / 2, self.high):
            p.setPen(grid)
            p.drawLine(int(plot.left()), int(y_of(v)), int(plot.right()), int(y_of(v)))
            p.setPen(pal.text().color())
            p.drawText(QRectF(0, y_of(v) - fm.height() / 2, left - 6, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.value_format.format(v))
        zero = y_of(0.0)
        p.setPen(QPen(pal.text().color()))
        p.drawLine(int(plot.left()), int(zero), int(plot.right()), int(zero))
        group = plot.width() / len(self.labels)
        bar = group * 0.8 / max(1, len(self.series))
        for i, label in enumerate(self.labels):
            gx = plot.left() + i * group + group * 0.1
            for j, s in enumerate(self.series):
                v = s.values[i] if i < len(s.values) else None
                if v is None:
                    continue
                y = y_of(v)
                p.fillRect(QRectF(gx + j * bar, min(y, zero), bar - 2, abs(zero - y)), QColor(s.color))
            text = fm.elidedText(label, Qt.TextElideMode.ElideMiddle, int(group))
            p.drawText(QRectF(plot.left() + i * group, plot.bottom() + 4, group, fm.height()),
                       Qt.AlignmentFlag.AlignHCenter, text)
        p.end()
