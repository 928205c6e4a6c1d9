"""Imaging mode (HRTEM or STEM) read from each format's metadata, set by the user, and a
warning when a model trained on HRTEM is given a STEM image."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_tem_atoms import TEMAtomsError, read_image, read_images
from napari_tem_atoms.analysis.detect import DomainWarning, detect_atoms, domain_warning
from napari_tem_atoms.cli import main
from napari_tem_atoms.io import Calibration, TEMImage
from napari_tem_atoms.io.imaging_mode import (
    detector_mode,
    digital_micrograph_mode,
    parse_imaging_mode,
    tia_mode,
    tiff_mode,
    velox_mode,
)
from napari_tem_atoms.models import LoadedModel

# (file in HyperSpy's test data, mode, words of the source)
REAL_FILES = [
    ("dm3_2D_data/test_STEM_image.dm3", "STEM-HAADF", "DigiScan"),
    ("dm3_2D_data/multi_signal.dm3", "STEM-HAADF", "detector HAADF"),
    ("dm3_2D_data/test_diffraction_pattern.dm3", "unknown", "diffraction pattern"),
    ("dm4_2D_data/test-MonarcCL_mono-image.dm4", "unknown", "Illumination Mode SEM"),
    ("dm4_3D_data/test-1.dm4", "unknown", "no Microscope Info"),
    ("FEI_new/128x128-TEM_search.emi", "HRTEM", "TIA metadata: Mode 'TEM uP SA Zoom Image'"),
    ("FEI_new/128x128-TEM_search_1.ser", "HRTEM", "TIA metadata: Mode"),  # from the EMI beside
    ("FEI_old/64x64x5_TEM_preview.emi", "HRTEM", "TIA metadata"),
    ("FEI_old/64x64_diffraction_acquire_1.ser", "unknown", "EMI file"),
    ("emd_files/fei_example_tem_stack.emd", "HRTEM", "Velox metadata: camera BM-Ceta"),
    ("emd_files/example_image.emd", "unknown", "Berkeley EMD file does not say"),
    ("hdf5_files/example2_v3.1.hspy", "unknown", "diffraction pattern"),
    ("tiff_files/test_loading_image_saved_with_DM.tif", "unknown", "TIFF tags"),
    ("tiff_files/test_loading_image_saved_with_imageJ.tif", "unknown", "TIFF tags"),
]


@pytest.mark.parametrize(("name", "mode", "words"), REAL_FILES)
def test_mode_is_read_from_real_files(hyperspy_files, name, mode, words):
    image = read_image(hyperspy_files / name, lazy=True)
    assert image.imaging_mode == mode
    assert words in image.imaging_mode_source


def test_made_files_without_the_mode_say_why(made_files):
    for name, words in [("mrc", "MRC headers"), ("npy_stack", "NPY file"),
                        ("ome_stack", "TIFF tags"), ("berkeley_emd", "Berkeley EMD")]:
        image = read_image(made_files[name])
        assert image.imaging_mode == "unknown" and words in image.imaging_mode_source, name
    folder = read_image(made_files["frames"])
    assert folder.imaging_mode == "unknown"
    assert folder.imaging_mode_source.startswith("first frame: ")


def _velox_copy(source, target, change):
    """A copy of a Velox EMD whose per-frame metadata JSON is changed by `change(dict)`."""
    import h5py

    shutil.copy(source, target)
    with h5py.File(target, "r+") as emd:
        for group in emd["Data/Image"].values():
            stored = group["Metadata"]
            column = np.array(stored)
            for frame in range(column.shape[1]):
                text = column[:, frame].tobytes().rstrip(b"\0").decode("utf-8")
                metadata = json.loads(text)
                change(metadata)
                encoded = json.dumps(metadata).encode("utf-8")
                assert len(encoded) <= column.shape[0]
                column[:, frame] = 0
                column[:len(encoded), frame] = np.frombuffer(encoded, np.uint8)
            stored[...] = column
    return target


def test_velox_stem_image_takes_its_detector(hyperspy_files, tmp_path):
    source = hyperspy_files / "emd_files/fei_example_tem_stack.emd"

    def recorded_by(name):
        def change(metadata):
            index = next(key.split("-")[1] for key, entry in metadata["Detectors"].items()
                         if entry["DetectorName"] == name)
            metadata["BinaryResult"].update(Detector=name, DetectorIndex=index)
            metadata["Scan"] = {"FrameTime": "0.8", "DwellTime": "1e-05"}  # as STEM files have
        return change

    # The TEM file lists a retracted HAADF detector: only the one that recorded counts.
    stem = _velox_copy(source, tmp_path / "haadf.emd", recorded_by("HAADF"))
    image = read_image(stem)
    assert image.imaging_mode == "STEM-HAADF"
    assert image.imaging_mode_source == "Velox metadata: detector HAADF"

    # Without the detector (RosettaSciIO needs it to read the file): the illumination.
    tree = {key: value for key, value in read_image(source).original_metadata.items()
            if key not in ("BinaryResult", "Detectors", "DetectorMetadata")}
    assert velox_mode(tree).mode == "unknown"  # this file's "Free" says neither
    for illumination, mode in (("Probe", "STEM"), ("Parallel", "HRTEM")):
        tree["Optics"] = {**tree["Optics"], "IlluminationMode": illumination}
        assert velox_mode(tree).mode == mode
        assert illumination in velox_mode(tree).source


def test_tia_stem_and_a_ser_file_without_its_emi(hyperspy_files, tmp_path):
    for name in ("128x128-TEM_search.emi", "128x128-TEM_search_1.ser"):
        shutil.copy(hyperspy_files / "FEI_new" / name, tmp_path / name)
    alone = tmp_path / "alone" / "128x128-TEM_search_1.ser"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "128x128-TEM_search_1.ser", alone)
    image = read_image(alone)
    assert image.imaging_mode == "unknown" and "EMI file" in image.imaging_mode_source

    emi = tmp_path / "128x128-TEM_search.emi"
    raw = emi.read_bytes()
    assert b" TEM uP SA Zoom Image" in raw and b"<CameraNamePath>" in raw
    emi.write_bytes(raw.replace(b" TEM uP SA Zoom Image", b" STEM nP SA Zoom Image"))
    for path in (emi, tmp_path / "128x128-TEM_search_1.ser"):  # a camera in STEM: diffraction
        image = read_image(path)
        assert image.imaging_mode == "unknown", path
        assert "diffraction pattern" in image.imaging_mode_source
    assert tia_mode({"ObjectInfo": {"ExperimentalDescription": {
        "Mode": " STEM nP SA Zoom Diffraction"}}}).mode == "STEM"


def test_hyperspy_and_berkeley_files_written_with_a_mode(made_files, tmp_path):
    import h5py
    from rsciio import emd, hspy

    axes = [{"name": name, "size": 40, "scale": 0.02, "offset": 0, "units": "nm",
             "navigate": False} for name in ("y", "x")]

    def signal(title, **metadata):
        return {"data": np.ones((40, 40), np.float32), "axes": axes,
                "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""},
                             **metadata},
                "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
                "learning_results": {}, "models": {},
                "package_info": {"name": "napari-tem-atoms tests", "version": "0"}}

    stem = tmp_path / "stem.hspy"
    hspy.file_writer(str(stem), signal(
        "HAADF", Acquisition_instrument={"TEM": {"acquisition_mode": "STEM"}}))
    image = read_image(stem)
    assert image.imaging_mode == "STEM-HAADF"
    assert image.imaging_mode_source == ("HyperSpy metadata: acquisition_mode STEM, detector "
                                         "HAADF")
    tem = tmp_path / "tem.hspy"
    hspy.file_writer(str(tem), signal(
        "image", Acquisition_instrument={"TEM": {"acquisition_mode": "TEM"}}))
    assert read_image(tem).imaging_mode == "HRTEM"
    assert read_image(made_files["hspy_pm"]).imaging_mode == "unknown"

    named = tmp_path / "haadf.emd"
    emd.file_writer(str(named), signal("HAADF"))
    assert read_image(named).imaging_mode == "STEM-HAADF"
    bright = tmp_path / "bf.emd"  # "BF" alone is also TEM bright field: not enough
    emd.file_writer(str(bright), signal("BF"))
    assert read_image(bright).imaging_mode == "unknown"
    with h5py.File(bright, "r+") as stored:
        stored.require_group("microscope").attrs["detector"] = "ABF"
    assert read_image(bright).imaging_mode == "STEM-ABF"


def test_dm_tem_image_and_jeol_tiff_tags():
    tags = {"ImageList": {"TagGroup0": {"Name": "image", "ImageTags": {"Microscope Info": {
        "Illumination Mode": "TEM", "Imaging Mode": "IMAGING", "Operation Mode": "IMAGING"}}}}}
    found = digital_micrograph_mode(tags)
    assert found.mode == "HRTEM" and "Illumination Mode TEM" in found.source
    tags["ImageList"]["TagGroup0"]["ImageTags"]["DigiScan"] = {"Channel": 0}
    assert "disagree" in digital_micrograph_mode(tags).source  # TEM, yet scanned: unknown
    del tags["ImageList"]["TagGroup0"]["ImageTags"]["Microscope Info"]
    assert digital_micrograph_mode(tags, "ABF").mode == "STEM-ABF"
    assert digital_micrograph_mode(tags, "image").mode == "STEM"

    def jeol(eos, mode_string="MAG", scanning="imfsHAADF"):
        return {"tags": {"ImageDescription": (
            "<?xml version='1.0'?>\n<TemReporter><Eos><EosMode>" + eos + "</EosMode></Eos>"
            "<ImageFormingSystem><ModeString>" + mode_string + "</ModeString>"
            "<ScanningImageFormingMode>" + scanning + "</ScanningImageFormingMode>"
            "</ImageFormingSystem></TemReporter>")}}

    assert tiff_mode(jeol("eosTEM")).mode == "HRTEM"
    assert tiff_mode(jeol("eosTEM", "DIFF")).mode == "unknown"
    assert tiff_mode(jeol("eosASID")).mode == "STEM-HAADF"
    assert tiff_mode({"tags": {"ImageDescription": "a note"}}).mode == "unknown"


def test_detector_names_and_user_modes():
    assert [detector_mode(name) for name in ("HAADF", "Fei HAADF", "DF4", "ABF", "BF-S",
                                             "BM-Ceta", "EDF", "")] == [
        "STEM-HAADF", "STEM-HAADF", "STEM-HAADF", "STEM-ABF", "STEM-BF", None, None, None]
    assert parse_imaging_mode("stem-haadf") == "STEM-HAADF"
    assert parse_imaging_mode("HRTEM") == parse_imaging_mode("hrtem") == "HRTEM"
    with pytest.raises(TEMAtomsError, match="stem-abf"):
        parse_imaging_mode("sem")


def test_napari_layer_metadata_carries_the_mode(hyperspy_files):
    from napari_tem_atoms.napari._reader import read_layers

    [(_, kwargs, kind)] = read_layers(str(hyperspy_files / "dm3_2D_data/test_STEM_image.dm3"))
    assert kind == "image" and kwargs["metadata"]["imaging_mode"] == "STEM-HAADF"
    assert "DigiScan" in kwargs["metadata"]["imaging_mode_source"]


# --- warnings ----------------------------------------------------------------------------------


def _tiny_model(**metadata):
    """The stand-in network of test_detect: the normalised image is the column map."""
    import torch
    from torch import nn

    class BrightSpots(nn.Module):
        depth = 2

        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(1, 1, 1)

        def forward(self, images):
            probability = torch.clamp(0.9 * images / 4.0, 1e-4, 0.95)
            return torch.log(probability / (1 - probability))

    return LoadedModel(network=BrightSpots().eval(), description={"sampling": 0.2, **metadata},
                       device="cpu", name="bright-spots")


def _image(mode, source="made for the test"):
    rows, cols = np.mgrid[0:96, 0:96]
    data = sum(np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * 4.5**2))
               for y, x in [(30, 30), (30, 60), (60, 45)]).astype(np.float32)
    return TEMImage(data=data, path=Path("made.npy"), name="made",
                    calibration=Calibration.uncalibrated(), file_format="NPY",
                    imaging_mode=mode, imaging_mode_source=source)


def test_stem_image_warns_that_an_hrtem_model_is_out_of_its_domain():
    with pytest.warns(DomainWarning, match=r"this is a STEM-HAADF image \(from DM tags: "
                      r"DigiScan\) but model bright-spots was trained on HRTEM images only: "
                      r"its detections will be wrong"):
        atoms = detect_atoms(_image("STEM-HAADF", "DM tags: DigiScan"), _tiny_model(),
                             sampling=0.1, threshold=0.5)
    assert "use stem-columns, the model for STEM images" in atoms.attrs["domain_warning"]
    assert atoms.attrs["imaging_mode"] == "STEM-HAADF"
    # Given by the user: over the file's mode, and for an array.
    with pytest.warns(DomainWarning, match="STEM-ABF image \\(set by the user\\)"):
        detect_atoms(np.asarray(_image("unknown").data), _tiny_model(), sampling=0.1,
                     imaging_mode="stem-abf")


@pytest.mark.parametrize(("mode", "given", "metadata"), [
    ("HRTEM", None, {}),
    ("unknown", None, {}),
    ("STEM-HAADF", "hrtem", {}),  # the user says the file is wrong
    ("STEM-HAADF", None, {"imaging_modes": ["STEM-HAADF"]}),  # a model trained on STEM
])
def test_no_domain_warning_where_the_model_fits(mode, given, metadata):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        atoms = detect_atoms(_image(mode), _tiny_model(**metadata), sampling=0.1,
                             threshold=0.5, imaging_mode=given)
    assert atoms.attrs["domain_warning"] is None


def test_an_hrtem_image_warns_for_a_stem_model():
    text = domain_warning("HRTEM", "TIA metadata", "stem-net", {"imaging_modes": ["STEM-HAADF"]})
    assert text.startswith("this is an HRTEM image (from TIA metadata) but model stem-net was "
                           "trained on STEM-HAADF images only")


def test_species_warns_for_a_stem_series(tmp_path):
    import torch

    from napari_tem_atoms.analysis.species import detect_species
    from napari_tem_atoms.models.registry import save_model
    from napari_tem_atoms.models.unet import UNet
    from napari_tem_atoms.samples import synthetic_focal_series

    torch.manual_seed(0)
    path = tmp_path / "species.safetensors"
    save_model(path, UNet(in_channels=3, out_channels=3, base_channels=4, depth=2), {
        "name": "test-species", "task": "species", "sampling": 0.2, "threshold": 0.3,
        "classes": ["Mo", "S2", "S1"],
        "architecture": {"in_channels": 3, "out_channels": 3, "base_channels": 4, "depth": 2}})
    series = TEMImage(data=synthetic_focal_series(shape=(96, 96)), path=tmp_path / "s.npy",
                      name="s", calibration=Calibration.uncalibrated(), file_format="NPY",
                      imaging_mode="STEM-HAADF", imaging_mode_source="HyperSpy metadata")
    with pytest.warns(DomainWarning, match="STEM-HAADF image .* trained on HRTEM"):
        atoms = detect_species(series, str(path), sampling=0.1, max_shift=4)
    assert atoms.attrs["domain_warning"]
    with warnings.catch_warnings():  # the mode is HRTEM: nothing about it (the gold series is
        # still said not to be MoS2, by another sentence of the same class)
        warnings.filterwarnings("error", message=".*trained on", category=DomainWarning)
        detect_species(series, str(path), sampling=0.1, max_shift=4, imaging_mode="hrtem")


# --- command line ------------------------------------------------------------------------------


def test_info_shows_the_mode(hyperspy_files, capsys):
    assert main(["info", str(hyperspy_files / "dm3_2D_data/test_STEM_image.dm3"),
                 str(hyperspy_files / "FEI_new/128x128-TEM_search.emi")]) == 0
    out = capsys.readouterr().out
    assert "  mode: STEM-HAADF (DM tags: DigiScan" in out
    assert "  mode: HRTEM (TIA metadata: Mode 'TEM uP SA Zoom Image')" in out


def test_detect_picks_the_stem_model_for_a_stem_file_and_says_why(hyperspy_files, tmp_path,
                                                                   capsys):
    stem = hyperspy_files / "dm3_2D_data/test_STEM_image.dm3"
    output = tmp_path / "atoms.csv"
    assert main(["detect", str(stem), "--sampling", "0.12", "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert f"{stem}: stem-columns: STEM-HAADF image (from DM tags:" in err
    assert "model stem-columns on cpu" in err
    assert "trained on HRTEM images only" not in err


def test_detect_warns_once_per_stem_file_given_an_hrtem_model(hyperspy_files, tmp_path,
                                                              capsys):
    stem = hyperspy_files / "dm3_2D_data/test_STEM_image.dm3"
    output = tmp_path / "atoms.csv"
    assert main(["detect", str(stem), "--sampling", "0.12", "--model", "au-hrtem",
                 "-o", str(output)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "trained on HRTEM images only" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"warning: {stem}: this is a STEM-HAADF image (from DM tags:")
    assert "model au-hrtem" in lines[0]
    # The user says it is HRTEM: au-hrtem is picked, and nothing is warned.
    assert main(["detect", str(stem), "--sampling", "0.12", "--mode", "hrtem",
                 "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert "trained on HRTEM images only" not in err and "model au-hrtem on" in err
    array = tmp_path / "image.npy"
    np.save(array, np.asarray(read_images(stem)[0].data, dtype=np.float32))
    assert main(["detect", str(array), "--sampling", "0.12", "--mode", "stem-bf",
                 "--model", "au-hrtem", "-o", str(output)]) == 0
    assert "STEM-BF image (set by the user (--mode))" in capsys.readouterr().err


@pytest.mark.gui
def test_detect_widget_picks_the_model_by_mode_and_warns_for_another(make_napari_viewer,
                                                                     hyperspy_files):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(hyperspy_files / "dm3_2D_data/test_STEM_image.dm3"),
                          plugin="napari-tem-atoms")
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Detect atoms")
    # Auto: the STEM model, and why; nothing to warn.
    assert widget.imaging_mode.value == "STEM-HAADF"
    assert widget.chosen_model()[0] == "stem-columns"
    assert widget.model_description.value.startswith("stem-columns: STEM-HAADF image")
    assert "trained on" not in widget.sampling_note.value
    # An HRTEM model chosen by hand: said, not refused.
    widget.model.value = "au-hrtem"
    assert "STEM-HAADF image" in widget.sampling_note.value
    assert "au-hrtem was trained on HRTEM images only" in widget.sampling_note.value
    assert widget.run_button.enabled
    # The user says the file is wrong: kept in the layer, and the warning goes.
    widget.imaging_mode.value = "HRTEM"
    assert layer.metadata["imaging_mode"] == "HRTEM"
    assert layer.metadata["imaging_mode_source"].startswith("set by the user")
    assert "STEM" not in widget.sampling_note.value
    widget.model.value = "auto"
    assert widget.chosen_model()[0] == "au-hrtem"
