import json

import pytest

from napari_tem_atoms import TEMAtomsError
from napari_tem_atoms.models import (
    FORMAT_VERSION,
    ModelDescription,
    describe,
    load_model,
    model_description,
    model_metadata,
    save_model,
)


@pytest.mark.parametrize("name", ["au-hrtem", "mos2-focal"])
def test_the_bundled_weights_are_described_as_version_1(name):
    described = model_description(name)
    metadata = model_metadata(name)
    assert described.version == 1 and "format_version" not in metadata
    assert described.name == metadata["name"] == name
    assert described.sampling == metadata["sampling"]
    assert described.threshold == metadata["threshold"]
    assert list(described.classes) == metadata["classes"]
    assert described.imaging_modes == ("HRTEM",)  # no key: trained on HRTEM


def test_the_counting_adatom_model_is_described_as_version_2():
    # Its count branch was trained by the one pipeline, which writes format version 2.
    described = model_description("au-hrtem-adatoms")
    metadata = model_metadata("au-hrtem-adatoms")
    assert described.version == metadata["format_version"] == FORMAT_VERSION == 2
    assert described.name == metadata["name"] == "au-hrtem-adatoms"
    assert described.threshold == metadata["threshold"] == 0.45
    assert described.counts and described.architecture["counts"] == 2
    assert described.imaging_modes == ("HRTEM",)
    # Four stages: columns, the count branch alone, both with the encoder, the column decoders.
    earlier = metadata["earlier_training"]
    assert [stage["steps"] for stage in earlier] == [1500, 1200, 1500]
    assert earlier[2]["steps"] == 1500 and earlier[2]["learning_rate"] == 2e-4
    assert metadata["training"]["steps"] == 800
    assert metadata["training"]["train_only"] == "decoders,head"


def test_attributes_say_what_the_keys_said():
    gold, species = model_description("au-hrtem"), model_description("mos2-focal")
    assert gold.task == "columns" and not gold.is_species and gold.crystal == "gold"
    assert gold.takes_conditions and gold.n_conditions == 4 and gold.in_channels == 1
    assert gold.cs_range == (-300000.0, 300000.0) and gold.defocus_range == (-200.0, 200.0)
    assert gold.energy == 300e3
    assert species.is_species and species.in_channels == 3 and not species.takes_conditions
    assert species.cs_range is None  # its envelope nests the microscope: no Cs range here


def test_a_partial_table_gets_the_defaults_of_version_1():
    described = describe({"sampling": 0.1})
    assert (described.task, described.threshold, described.classes) == ("columns", 0.5,
                                                                       ("column",))
    assert describe(described) is described


def test_saved_weights_carry_the_version_and_load(tmp_path):
    from napari_tem_atoms.models.unet import UNet

    network = UNet(in_channels=1, out_channels=1, base_channels=4, depth=2)
    metadata = {"name": "tiny", "description": "a test", "sampling": 0.2,
                "architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4,
                                 "depth": 2}}
    path = tmp_path / "tiny.safetensors"
    save_model(path, network, metadata)
    loaded = load_model(path, device="cpu", engine="torch", precision="fp32")
    assert loaded.description.version == FORMAT_VERSION
    assert loaded.description.name == "tiny" and loaded.sampling == 0.2
    assert loaded.metadata["format_version"] == FORMAT_VERSION


def test_a_newer_format_is_refused_in_words():
    metadata = {**model_metadata("au-hrtem"), "format_version": FORMAT_VERSION + 1}
    with pytest.raises(TEMAtomsError, match=r"format version .*a newer one may read it"):
        ModelDescription.from_metadata(metadata, "w.safetensors")


def test_bad_metadata_is_refused_naming_the_file():
    metadata = json.loads(json.dumps(model_metadata("au-hrtem")))
    metadata["sampling"] = -1
    with pytest.raises(TEMAtomsError, match=r"^w\.safetensors: .*'sampling'"):
        ModelDescription.from_metadata(metadata, "w.safetensors")
