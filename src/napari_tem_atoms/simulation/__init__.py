"""Training data: abTEM exit waves of gold nanoparticles and a randomised microscope.

The structure and exit-wave modules need the optional ``simulate`` extra (abTEM, ase):
``pip install "napari-tem-atoms[simulate]"``. The microscope and the column truth need only
NumPy/SciPy, so training from cached exit waves works without abTEM.
"""

from .columns import project_columns
from .microscope import MicroscopeEnvelope, MicroscopeSettings, form_image, wavelength

__all__ = [
    "MicroscopeEnvelope",
    "MicroscopeSettings",
    "form_image",
    "project_columns",
    "wavelength",
]
