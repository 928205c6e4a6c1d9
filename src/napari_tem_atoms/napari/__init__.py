"""napari adapters: the npe2 reader, writer, sample data and dock widgets.

Everything here is a thin layer over the core package; only these modules import napari/Qt.
"""
