"""The "Occupancy plots" dock (matplotlib inside napari).

Occupancy and transition rate of every site against its distance to the particle's edge, and the
occupancy timeline of the site under the cursor or selected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QSizePolicy, QVBoxLayout, QWidget

from ..analysis.occupancy import LAYER_NAMES, SiteOccupancy

LAYER_COLOURS = {"surface": "#e4572e", "sub-surface": "#f3a712", "bulk": "#4c86a8"}

#: Height the plots need at least [px]: below it a panel's ticks and points crowd.
MINIMUM_HEIGHT = 380
#: Share of its dock column the plots take when they appear: at 1600 x 1000 with every dock
#: of the plugin tabbed above them, they had their minimum (a 95-px panel each). The widgets
#: above scroll, and Occupancy scrolls its results into view.
COLUMN_SHARE = 0.68


def give_plots_room(plot: QWidget) -> None:
    """Give the dock holding `plot` most of the height of its dock column.

    The docks above it (the plugin's widgets, tabbed) keep the rest; they scroll. Done once
    the window has laid the new dock out (sizes set before that are ignored), and only when
    the window is shown.

    Parameters
    ----------
    plot : QWidget
        The plots, just docked in napari's window.
    """
    QTimer.singleShot(0, lambda: _resize_column(plot))


def _resize_column(plot: QWidget) -> None:
    try:
        dock, window = plot.parentWidget(), plot.window()
    except RuntimeError:  # closed before the window came back to it
        return
    if not isinstance(dock, QDockWidget) or not isinstance(window, QMainWindow):
        return
    if dock.isFloating() or dock.visibleRegion().isEmpty():
        return
    area, left, right = window.dockWidgetArea(dock), dock.x(), dock.x() + dock.width()
    # The docks shown above or below it (of a tabbed group, the tab in front).
    others = [other for other in window.findChildren(QDockWidget)
              if other is not dock and not other.isFloating()
              and window.dockWidgetArea(other) == area and not other.visibleRegion().isEmpty()
              and other.x() < right and other.x() + other.width() > left]
    if not others:
        return
    column = dock.height() + sum(other.height() for other in others)
    height = max(plot.minimumHeight(), int(COLUMN_SHARE * column))
    rest = max(0, column - height) // len(others)
    window.resizeDocks([*others, dock], [rest] * len(others) + [height],
                       Qt.Orientation.Vertical)


class OccupancyPlot(QWidget):
    """Two panels over a :class:`~napari_tem_atoms.analysis.occupancy.SiteOccupancy`."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4.5, 5.5), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        # Filling the dock: at its preferred size (the figure's 550 px) it left the rest blank.
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.setMinimumHeight(MINIMUM_HEIGHT)
        self.result: SiteOccupancy | None = None
        self.site: int | None = None
        self.frame: int | None = None
        axes = self.figure.subplots(3, 1, height_ratios=[1, 1, 0.8])
        self.occupancy_axes, self.rate_axes, self.timeline_axes = axes
        self._frame_line: Any = None

    def sizeHint(self) -> QSize:
        """Room for three panels, where a dock area shares its height by size hints."""
        return QSize(480, 2 * MINIMUM_HEIGHT)

    def set_result(self, result: SiteOccupancy) -> None:
        """Draw the per-site panels of a new result."""
        self.result, self.site = result, None
        sites = result.sites
        distance_column = ("edge_distance_angstrom" if "edge_distance_angstrom" in sites
                           else "edge_distance_px")
        unit = "Å" if distance_column.endswith("angstrom") else "px"
        for axes, column, label in ((self.occupancy_axes, "occupancy", "occupancy"),
                                    (self.rate_axes, "transition_rate", "transitions / frame")):
            axes.clear()
            for layer in LAYER_NAMES:
                chosen = sites[sites["layer"] == layer]
                if len(chosen):
                    axes.scatter(chosen[distance_column], chosen[column], s=10, alpha=0.7,
                                 color=LAYER_COLOURS[layer], label=f"{layer} ({len(chosen)})")
            axes.set_ylabel(label)
            axes.grid(alpha=0.3)
        self.occupancy_axes.set_ylim(-0.05, 1.05)
        # Above the panel, in one row: inside it, the legend hid the points of empty sites.
        self.occupancy_axes.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                                   ncol=len(LAYER_NAMES), frameon=False, borderaxespad=0.2,
                                   handletextpad=0.2, columnspacing=1.0)
        self.rate_axes.set_xlabel(f"distance to the particle edge ({unit})")
        self._draw_timeline()

    def show_site(self, site: int | None) -> None:
        """Show the occupancy timeline of one site (``None``: a hint instead)."""
        if site == self.site:
            return
        self.site = site
        self._draw_timeline()

    def set_frame(self, frame: int) -> None:
        """Mark the frame shown in the viewer on the timeline."""
        self.frame = int(frame)
        if self._frame_line is not None:
            self._frame_line.set_xdata([self.frame, self.frame])
            self.canvas.draw_idle()

    def _draw_timeline(self) -> None:
        axes = self.timeline_axes
        axes.clear()
        self._frame_line = None
        if self.result is None or self.site is None:
            axes.text(0.5, 0.5, "hover over or select a site", ha="center", va="center",
                      transform=axes.transAxes, fontsize=8, color="0.4")
            axes.set_xticks([])
            axes.set_yticks([])
        else:
            result, site = self.result, self.site
            row = result.sites.iloc[site]
            state = np.where(result.observed[:, site], result.occupied[:, site], np.nan)
            frames = np.arange(len(state))
            axes.step(frames, state, where="mid", color="#1d3557", linewidth=1,
                      label="inferred state" if result.posterior is not None else "state")
            axes.fill_between(frames, 0, np.nan_to_num(state), step="mid", alpha=0.3,
                              color="#457b9d")
            if result.posterior is not None and result.evidence is not None:
                # The HMM's probability of "occupied", and the evidence of each frame behind
                # it, on the site's own scale: 0 at its fitted empty level, 1 at occupied.
                axes.plot(frames, result.posterior[:, site], color="#e4572e", linewidth=1,
                          label="P(occupied)")
                if result.evidence_levels is not None:
                    empty, occupied = result.evidence_levels[site]
                    scale = occupied - empty if occupied != empty else 1.0
                    evidence = np.clip((result.evidence[:, site] - empty) / scale, -0.1, 1.25)
                    axes.plot(frames, evidence, "o", markersize=2.5, color="#2a9d8f",
                              label="evidence (empty 0, occupied 1)")
                axes.legend(fontsize=6, loc="upper right", ncol=3, framealpha=0.6)
            axes.set_ylim(-0.1, 1.25)
            axes.set_yticks([0, 1], ["empty", "occupied"])
            axes.set_xlabel("frame")
            # Whole frames only (ticks at half frames read as sub-frame times).
            axes.xaxis.get_major_locator().set_params(integer=True)
            axes.set_title(f"site {site} ({row['layer']}): occupancy {row['occupancy']:.2f}, "
                           f"{row['transitions_off']:.1f} off / {row['transitions_on']:.1f} on",
                           fontsize=8)
            if self.frame is not None:
                self._frame_line = axes.axvline(self.frame, color="#e63946", linewidth=1)
        self.canvas.draw_idle()
