"""Docks that take the aligned copy of their stack when the Align dock makes one.

Align adds "<stack> aligned" (metadata ``aligned_from``) and hides the original: a dock that
kept the hidden, misaligned stack measured drift and occupancy on what the user no longer
sees. Undo removes the aligned copy: the dock goes back to the original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def follow_aligned_stack(viewer: Any, choice: Any, busy: Callable[[], bool],
                         accepts: Callable[[Any], bool] = lambda layer: True) -> None:
    """Switch the layer `choice` to the aligned copy of its layer when Align adds one.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layer list is watched.
    choice : magicgui ComboBox
        The dock's image-layer choice.
    busy : callable
        True while the dock runs: its choice then stays (the run uses the layer it started on).
    accepts : callable, optional
        Whether the dock can use a layer (Species: a focal series).
    """

    def on_inserted(event: Any) -> None:
        layer, chosen = event.value, choice.value
        if (chosen is not None and not busy() and accepts(layer)
                and getattr(layer, "metadata", {}).get("aligned_from") == chosen.name):
            choice.reset_choices()  # napari resets the choices after this handler
            choice.value = layer

    def on_removed(event: Any) -> None:
        layer = event.value
        original = getattr(layer, "metadata", {}).get("aligned_from")
        if choice.value is layer and not busy() and original in viewer.layers:
            choice.reset_choices()
            choice.value = viewer.layers[original]

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(on_removed)
