"""Layout shared by the dock widgets: rows in a vertical scroll area, wrapped messages.

napari docks a widget at its full height: five tall widgets tabbed together, plus the Occupancy
plots, asked for more height than a 1000-px screen has, and the window grew past its bottom
edge (status bar and plots cut off). In a scroll area a widget asks for little height; its
width stays what its rows need, so nothing is clipped on the right. magicgui's
``scrollable=True`` does not do this: napari docks the inner widget, not the scroll area, and the
width magicgui gives the scroll area is fixed when the rows are added, before their texts are.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

#: Height a scrolled widget asks for at least [px]: a few rows.
MINIMUM_HEIGHT = 120


class _RowsScrollArea(QScrollArea):
    """A vertical scroll area as wide as the widget inside wants to be."""

    def _frame_and_bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:
        content = self.widget().sizeHint()
        return QSize(content.width() + self._frame_and_bar(), content.height())

    def minimumSizeHint(self) -> QSize:
        # The content's own minimum width: below it the rows would be cut on the right.
        width = self.widget().minimumSizeHint().width() + self._frame_and_bar()
        return QSize(width, min(MINIMUM_HEIGHT, self.widget().minimumSizeHint().height()))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # a row appeared or a text changed: the dock follows
        return super().eventFilter(watched, event)


def scroll_rows(container: Any) -> None:
    """Put the rows of a magicgui `container` in a vertical scroll area.

    ``container.native`` stays the widget napari docks; magicgui keeps adding rows to the
    same layout, which now lives inside the scroll area.
    """
    native = container.native
    rows = QWidget()
    rows.setLayout(native.layout())  # moves magicgui's layout, with its rows, to `rows`
    # Rows at the top, as napari's dock keeps them; rows magicgui adds later go above it.
    rows.layout().addStretch()
    scroll = _RowsScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(rows)
    layout = QVBoxLayout(native)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)


def scroll_into_view(*widgets: Any) -> None:
    """Scroll the rows of a dock so that `widgets` (magicgui widgets of it) are in view.

    For results shown at the foot of a dock (a status line, a Save button): a dock shorter than
    its rows, as tabbed docks are, showed them only after the user scrolled down. When they do
    not all fit, the first widget is shown. Done again once the window has laid itself out
    (a dock added beside this one, as the Occupancy plots, makes it shorter).
    """

    def scroll() -> None:
        for widget in reversed(widgets):  # the first last: it wins when they do not all fit
            native = widget.native
            try:
                area = native.parentWidget()
            except RuntimeError:  # the dock was closed before the timer fired
                return
            while area is not None and not isinstance(area, QScrollArea):
                area = area.parentWidget()
            if area is not None:
                area.ensureWidgetVisible(native, 0, 4)

    scroll()
    QTimer.singleShot(0, scroll)
    QTimer.singleShot(100, scroll)


def wrap_text(*labels: Any) -> None:
    """Let magicgui `labels` wrap their text and be narrower than it.

    Unwrapped, a long message widened the whole dock area over the image; wrapped but of fixed
    size (magicgui's), it still set the dock's width to about 80 characters, and narrower it
    was cut at the height of those lines.
    """
    for label in labels:
        label.native.setWordWrap(True)
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)  # as tall as its lines at the width it gets
        label.native.setSizePolicy(policy)


def show_scale_bar(viewer: Any, position: str | None = None) -> None:
    """Show the viewer's scale bar, optionally at `position` (e.g. ``"bottom_left"``).

    napari 0.9 keeps it in the canvas's overlays; the viewer's own ``scale_bar`` is deprecated.
    """
    canvas = getattr(viewer, "canvas", None)
    scale_bar = canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar
    scale_bar.visible = True
    if position is not None:
        scale_bar.position = position
