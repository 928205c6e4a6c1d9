"""Atomap reference columns on real public STEM images, for ``benchmarks/stem_real.py``.

Runs in a separate virtual environment with Atomap (it is no dependency of the plugin)::

    python3 -m venv /tmp/atomap-venv && /tmp/atomap-venv/bin/pip install atomap
    # the MoS2 image ships in the source distribution of temul-toolkit (13 MB):
    /tmp/atomap-venv/bin/pip download --no-deps --no-binary :all: temul-toolkit==0.1.9 -d /tmp/pkgs
    tar xzf /tmp/pkgs/temul_toolkit-0.1.9.tar.gz -C /tmp/pkgs
    /tmp/atomap-venv/bin/python benchmarks/stem_real_reference.py \\
        --temul /tmp/pkgs/temul_toolkit-0.1.9 --out /work/stem_real_refs

The images (public, shipped in packages on PyPI):

``srtio3-haadf``, ``srtio3-abf``
    ``atomap/tests/datasets/test_ADF_cropped.hdf5`` and ``test_ABF_cropped.hdf5`` of the
    ``atomap`` wheel (0.4.2): SrTiO3 along [110], (HA)ADF and ABF recorded in the same scan,
    380 x 400 px. The files' axes have no unit; their scale 0.009326 is in nm (0.09326 Å/px:
    the Sr-Sr spacing along [001], 3.905 Å, is 41.9 px in the image).
``mos2-haadf``
    ``temul/example_data/experimental/example_Se_implanted_MoS2.dm3`` of the ``temul-toolkit``
    source distribution (0.1.9): ADF image of Se-implanted monolayer MoS2, 60 kV, 1024 x 1024 px,
    0.127 Å/px from the DM calibration (the Mo-Mo spacing, 3.16 Å, is 24.9 px).

The workflow is Atomap's documented one (atomap.org, "Finding atom positions" and "Analysing a
perovskite oxide"): the feature separation chosen by looking at ``get_feature_separation``
(here at the separations of ``--explore``; the choice is written below per image), then
``get_atom_positions``, ``Sublattice``, ``find_nearest_neighbors``,
``refine_atom_positions_using_center_of_mass`` and ``refine_atom_positions_using_2d_gaussian``.
A second (third) sublattice that is visible in the image is placed between the first one's
columns with ``construct_zone_axes`` and ``find_missing_atoms_from_zone_vector`` and refined the
same way on the image with the first sublattice's Gaussians subtracted
(``remove_atoms_from_image_using_2d_gaussian``). An ABF image is inverted (1 / image) as
Atomap's ABF examples do, so that its columns are maxima.

Written per image to ``OUT/<name>/``:

``image.npy``
    the image as recorded (float32; ABF not inverted).
``columns.csv``
    ``row,col,sublattice``: the refined column positions in pixels, the centre of pixel
    ``[r, c]`` at ``(r, c)`` (napari's convention; Atomap's ``x, y`` are ``col, row`` with the
    same integer pixel centres: checked on a synthetic image, where the Gaussian refinement
    returns a known centre to 0.001 px).
``meta.json``
    the source, material, mode, pixel size [Å], the Atomap parameters, the column count per
    sublattice, which sublattices the detection is scored on (``scored_sublattices``), and the
    wall-clock time of the workflow (``atomap_seconds``: peak finding, sublattices, nearest
    neighbours, both refinements and the zone axes; not the loading, the feature-separation
    plots or the overlays), with the processor.
``overlay.png``
    the columns on the image (whole field and a zoom), to check by eye.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

import atomap  # noqa: E402
import atomap.api as am  # noqa: E402
import hyperspy.api as hs  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from atomap.tools import remove_atoms_from_image_using_2d_gaussian  # noqa: E402
from scipy import ndimage  # noqa: E402

ATOMAP_DATA = Path(atomap.__file__).parent / "tests" / "datasets"
ATOMAP_VERSION = metadata.version("atomap")
COLOURS = {"Sr": "tab:red", "Ti": "tab:blue", "O": "tab:green", "Mo": "tab:red",
           "S2": "tab:cyan"}


def processor() -> str:
    """The CPU model and core count, for the timings."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import os
    return f"{model}, {os.cpu_count()} cores"


def refine(sublattice: am.Sublattice) -> None:
    """Atomap's standard refinement: nearest neighbours, centre of mass, 2-D Gaussian."""
    sublattice.find_nearest_neighbors()
    sublattice.refine_atom_positions_using_center_of_mass(show_progressbar=False)
    sublattice.refine_atom_positions_using_2d_gaussian(show_progressbar=False)


def zone_vector(sublattice: am.Sublattice, length_px: float, direction: str | None = None
                ) -> tuple[float, float]:
    """The sublattice's zone vector (x, y) [px] closest to `length_px` long.

    `direction` ``"x"`` or ``"y"`` keeps only vectors within 20° of that image axis.
    """
    best, best_error = None, np.inf
    for vector in sublattice.zones_axis_average_distances:
        x, y = float(vector[0]), float(vector[1])
        angle = np.degrees(np.arctan2(abs(y), abs(x)))
        if (direction == "x" and angle > 20) or (direction == "y" and angle < 70):
            continue
        error = abs(np.hypot(x, y) - length_px)
        if error < best_error:
            best, best_error = (x, y), error
    if best is None:
        raise RuntimeError(f"no zone vector of about {length_px:.1f} px")
    return best


def positions(sublattice: am.Sublattice) -> np.ndarray:
    """(N, 2) refined positions (row, col) [px]."""
    return np.column_stack([sublattice.y_position, sublattice.x_position])


def srtio3(image: np.ndarray, pixel_size: float, abf: bool
           ) -> tuple[dict[str, np.ndarray], dict, dict[str, float]]:
    """Sr, Ti(-O) and (ABF only) O columns of SrTiO3 [110] by Atomap's perovskite workflow.

    ``get_feature_separation`` over 5-30 px: at 8-14 px the peaks are the Sr and the Ti
    columns mixed (ADF) or with O and noise (inverted ABF); from 16 px (ADF) or 18 px (ABF) to
    20 px the Sr columns alone, every one of them away from the border (at 16 px in the ABF image
    15 Ti columns are still taken: no two peaks may be closer than the 21 px between Sr and Ti).
    The smallest of these is taken: 16 px (ADF, as Atomap's tests of this image: 0.15 nm) and
    18 px (ABF). Ti: half way between Sr columns along [001] (the 3.9 Å zone vector,
    horizontal). O (ABF): half way between Ti columns along [1-10] (the 2.76 Å zone vector,
    vertical); in the ADF image the O columns are not visible and not placed.
    """
    signal = hs.signals.Signal2D(1.0 / image if abf else image.astype(np.float64))
    separation = 18 if abf else 16
    timings = {}
    start = time.perf_counter()
    peaks = am.get_atom_positions(signal, separation=separation)
    timings["peak_finding"] = time.perf_counter() - start
    sr = am.Sublattice(peaks, image=signal.data)
    refine(sr)
    sr.construct_zone_axes()
    zone_001 = zone_vector(sr, 3.905 / pixel_size, "x")
    ti = am.Sublattice(sr.find_missing_atoms_from_zone_vector(zone_001),
                       image=remove_atoms_from_image_using_2d_gaussian(
                           sr.image, sr, show_progressbar=False))
    refine(ti)
    columns = {"Sr": positions(sr), "Ti": positions(ti)}
    params = {"separation_px": separation, "pca": False, "subtract_background": False,
              "threshold_rel": 0.02, "feature_separation_checked_px": [5, 30],
              "Ti_zone_vector_px": list(zone_001), "Ti_vector_fraction": 0.5}
    if abf:
        ti.construct_zone_axes()
        zone_110 = zone_vector(ti, 3.905 * np.sqrt(2) / 2 / pixel_size, "y")
        without_cations = remove_atoms_from_image_using_2d_gaussian(
            ti.image, ti, show_progressbar=False)
        oxygen = am.Sublattice(ti.find_missing_atoms_from_zone_vector(zone_110),
                               image=without_cations)
        refine(oxygen)
        columns["O"] = positions(oxygen)
        params.update({"O_zone_vector_px": list(zone_110), "O_vector_fraction": 0.5,
                       "inverted": "1 / image"})
    timings["total"] = time.perf_counter() - start
    return columns, params, timings


def mos2(image: np.ndarray, pixel_size: float
         ) -> tuple[dict[str, np.ndarray], dict, dict[str, float]]:
    """Mo and S2 columns of monolayer MoS2 by Atomap.

    ``get_feature_separation`` over 4-16 px with ``pca=True`` (the image is noisy): below 8 px
    noise and contamination maxima, from 9 px to 12 px the Mo columns and nothing else: 10 px
    is taken. S2: the sublattice of 1H MoS2 is at 1/3 (or 2/3) of the Mo zone vector of length
    sqrt(3) a; which of the two is S2 (the other third is the empty hollow site) is decided by
    the brightness of the smoothed image with the Mo columns subtracted.
    """
    signal = hs.signals.Signal2D(image.astype(np.float64))
    separation = 10
    timings = {}
    start = time.perf_counter()
    peaks = am.get_atom_positions(signal, separation=separation, pca=True)
    timings["peak_finding"] = time.perf_counter() - start
    mo = am.Sublattice(peaks, image=signal.data)
    refine(mo)
    mo.construct_zone_axes()
    long_vector = zone_vector(mo, 3.16 * np.sqrt(3) / pixel_size)
    without_mo = remove_atoms_from_image_using_2d_gaussian(mo.image, mo,
                                                           show_progressbar=False)
    smooth = ndimage.gaussian_filter(without_mo, 2)
    candidates = {}
    for fraction in (1 / 3, 2 / 3):
        xy = np.asarray(mo.find_missing_atoms_from_zone_vector(long_vector,
                                                               vector_fraction=fraction))
        inside = ((xy[:, 0] >= 0) & (xy[:, 0] <= image.shape[1] - 1)
                  & (xy[:, 1] >= 0) & (xy[:, 1] <= image.shape[0] - 1))
        xy = xy[inside]
        brightness = ndimage.map_coordinates(smooth, [xy[:, 1], xy[:, 0]], order=1).mean()
        candidates[fraction] = (brightness, xy)
    fraction = max(candidates, key=lambda f: candidates[f][0])
    sulphur = am.Sublattice(candidates[fraction][1], image=without_mo)
    refine(sulphur)
    timings["total"] = time.perf_counter() - start
    hollow = min(candidates, key=lambda f: candidates[f][0])
    mo_level = ndimage.map_coordinates(ndimage.gaussian_filter(image.astype(float), 2),
                                       [mo.y_position, mo.x_position], order=1).mean()
    smooth_raw = ndimage.gaussian_filter(image.astype(float), 2)
    s_level = ndimage.map_coordinates(smooth_raw, positions(sulphur).T, order=1).mean()
    hollow_xy = candidates[hollow][1]
    hollow_level = ndimage.map_coordinates(smooth_raw, [hollow_xy[:, 1], hollow_xy[:, 0]],
                                           order=1).mean()
    params = {"separation_px": separation, "pca": True, "subtract_background": False,
              "threshold_rel": 0.02, "feature_separation_checked_px": [4, 16],
              "S2_zone_vector_px": list(long_vector), "S2_vector_fraction": fraction,
              # Contrast of the S2 sites above the empty hollow sites, relative to Mo's.
              "S2_relative_contrast": float((s_level - hollow_level) / (mo_level - hollow_level))}
    return {"Mo": positions(mo), "S2": positions(sulphur)}, params, timings


def explore(image: np.ndarray, name: str, separations: list[int], out: Path, pca: bool,
            zoom: tuple[slice, slice]) -> None:
    """The peaks of ``get_feature_separation`` at a few separations, as one PNG."""
    signal = hs.signals.Signal2D(image.astype(np.float64))
    fig, axes = plt.subplots(1, len(separations), figsize=(5 * len(separations), 5))
    for ax, separation in zip(axes, separations, strict=True):
        peaks = am.get_atom_positions(signal, separation=separation, pca=pca)
        ax.imshow(image[zoom], cmap="gray")
        r0, c0 = zoom[0].start, zoom[1].start
        keep = ((peaks[:, 1] >= r0) & (peaks[:, 1] < zoom[0].stop)
                & (peaks[:, 0] >= c0) & (peaks[:, 0] < zoom[1].stop))
        ax.plot(peaks[keep, 0] - c0, peaks[keep, 1] - r0, "r.", ms=5)
        ax.set_title(f"separation {separation} px: {len(peaks)} peaks")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / f"feature_separation_{name}.png", dpi=70)
    plt.close(fig)


def overlay(image: np.ndarray, columns: dict[str, np.ndarray], title: str, path: Path,
            zoom: tuple[slice, slice]) -> None:
    """The columns on the whole image and on a zoom."""
    fig, axes = plt.subplots(1, 2, figsize=(16, 8))
    for ax, window in zip(axes, [(slice(0, image.shape[0]), slice(0, image.shape[1])), zoom],
                          strict=True):
        ax.imshow(image[window], cmap="gray")
        r0, c0 = window[0].start, window[1].start
        for label, rc in columns.items():
            keep = ((rc[:, 0] >= r0) & (rc[:, 0] < window[0].stop)
                    & (rc[:, 1] >= c0) & (rc[:, 1] < window[1].stop))
            ax.plot(rc[keep, 1] - c0, rc[keep, 0] - r0, "o", mfc="none",
                    mec=COLOURS.get(label, "yellow"), ms=4 if ax is axes[0] else 9, mew=1,
                    label=f"{label} ({len(rc)})")
        ax.set_xlim(-0.5, window[1].stop - c0 - 0.5)
        ax.set_ylim(window[0].stop - r0 - 0.5, -0.5)
    axes[0].legend(loc="upper right")
    axes[0].set_title(title)
    axes[1].set_title("zoom")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def save(out: Path, name: str, image: np.ndarray, columns: dict[str, np.ndarray], meta: dict,
         zoom: tuple[slice, slice]) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", image.astype(np.float32))
    with open(folder / "columns.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "col", "sublattice"])
        for label, rc in columns.items():
            for row, col in rc:
                writer.writerow([f"{row:.4f}", f"{col:.4f}", label])
    meta["counts"] = {label: len(rc) for label, rc in columns.items()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    overlay(image, columns, f"{name}: Atomap {ATOMAP_VERSION}", folder / "overlay.png", zoom)
    print(f"{name}: {meta['counts']} columns, Atomap {meta['atomap_seconds']:.1f} s "
          f"({meta['atomap_timings']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temul", type=Path, required=True,
                        help="the unpacked temul-toolkit 0.1.9 source distribution")
    parser.add_argument("--out", type=Path, default=Path("/work/stem_real_refs"))
    parser.add_argument("--only", nargs="*", help="names of the images to do")
    parser.add_argument("--explore", action="store_true",
                        help="also write the feature-separation PNGs the choices came from")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = processor()
    common = {"atomap_version": ATOMAP_VERSION, "processor": cpu,
              "reference": "Atomap 2-D Gaussian refinement (benchmarks/stem_real_reference.py)"}

    jobs = []
    for name, filename, mode, abf in (
            ("srtio3-haadf", "test_ADF_cropped.hdf5", "STEM-HAADF", False),
            ("srtio3-abf", "test_ABF_cropped.hdf5", "STEM-ABF", True)):
        jobs.append((name, ATOMAP_DATA / filename, mode, abf))
    jobs.append(("mos2-haadf", args.temul / "temul" / "example_data" / "experimental"
                 / "example_Se_implanted_MoS2.dm3", "STEM-HAADF", False))

    for name, path, mode, abf in jobs:
        if args.only and name not in args.only:
            continue
        signal = hs.load(path, reader="HSPY") if path.suffix == ".hdf5" else hs.load(path)
        image = np.asarray(signal.data, dtype=np.float64)
        scale = float(signal.axes_manager[0].scale)
        units = str(signal.axes_manager[0].units)
        # test_*_cropped.hdf5 carry no unit: their scale is in nm (see the module docstring).
        pixel_size = scale * 10.0 if units in ("nm", "<undefined>", "None") else scale
        if name.startswith("srtio3"):
            if args.explore:
                explore(1.0 / image if abf else image, name, [8, 12, 16, 20], args.out, False,
                        (slice(0, 200), slice(0, 200)))
            columns, params, timings = srtio3(image, pixel_size, abf)
            meta = {"source": f"atomap {ATOMAP_VERSION} wheel: atomap/tests/datasets/"
                              f"{path.name}",
                    "material": "SrTiO3", "zone_axis": "[110]",
                    "microscope": "not recorded in the file",
                    "scored_sublattices": ["Sr", "Ti", "O"] if abf else ["Sr", "Ti"],
                    "zoom": [0, 200, 0, 200]}
        else:
            if args.explore:
                explore(image, name, [6, 8, 10, 12], args.out, True,
                        (slice(300, 428), slice(300, 428)))
            columns, params, timings = mos2(image, pixel_size)
            meta = {"source": "temul-toolkit 0.1.9 sdist: temul/example_data/experimental/"
                              "example_Se_implanted_MoS2.dm3",
                    "material": "MoS2 monolayer (Se implanted)", "zone_axis": "[001]",
                    "microscope": "60 kV (DM tags)",
                    "scored_sublattices": ["Mo", "S2"], "zoom": [300, 428, 300, 428]}
        meta.update(common)
        meta.update({"name": name, "mode": mode, "pixel_size_A": pixel_size,
                     "shape": list(image.shape), "atomap_parameters": params,
                     "atomap_seconds": timings["total"], "atomap_timings": timings})
        r0, r1, c0, c1 = meta["zoom"]
        save(args.out, name, image, columns, meta, (slice(r0, r1), slice(c0, c1)))


if __name__ == "__main__":
    main()
