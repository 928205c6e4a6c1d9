import warnings

import numpy as np
import pandas as pd
import pytest

import napari_tem_atoms
from napari_tem_atoms import (
    ConfigError,
    DomainWarning,
    InputError,
    SamplingWarning,
    TEMAtomsError,
    TEMAtomsWarning,
    TEMFileError,
    TransferWarning,
    atoms_table,
)


def test_one_hierarchy_and_user_errors_stay_value_errors():
    for error in (ConfigError, InputError, TEMFileError):
        assert issubclass(error, TEMAtomsError) and issubclass(error, ValueError)
    for warning in (TransferWarning, DomainWarning, SamplingWarning):
        assert issubclass(warning, TEMAtomsWarning) and issubclass(warning, UserWarning)
        assert warning.__name__ in napari_tem_atoms.__all__


def test_atoms_table_raises_an_input_error():
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        atoms_table(np.zeros((3, 5)))
    with pytest.raises(InputError, match="2 feature rows for 3 atoms"):
        atoms_table(np.zeros((3, 2)), pd.DataFrame({"confidence": [1.0, 2.0]}))


def test_config_loaders_raise_config_errors_naming_the_file(tmp_path):
    from napari_tem_atoms.training import load_config
    from napari_tem_atoms.training.species import load_species_config

    config = tmp_path / "run.toml"
    config.write_text("[train]\nwhat = 1\n")
    with pytest.raises(ConfigError, match=r"run\.toml: \[train\] has unknown keys: what"):
        load_config(config)
    config.write_text('task = "species"\n[train]\ninit_from = "a.safetensors"\n')
    with pytest.raises(ConfigError, match=r"run\.toml: \[train\] init_from"):
        load_species_config(config)
    config.write_text("[train\n")
    with pytest.raises(ConfigError, match="not a valid TOML file"):
        load_config(config)
    with pytest.raises(TEMFileError, match="cannot read the configuration"):
        load_config(tmp_path / "missing.toml")


def test_a_pixel_size_out_of_range_is_a_sampling_warning_users_can_silence():
    import torch

    from napari_tem_atoms import detect_atoms
    from napari_tem_atoms.models import LoadedModel

    class Flat(torch.nn.Module):
        depth = 2

        def forward(self, images):
            return torch.zeros_like(images) - 5.0  # a probability of 0.007 everywhere

    model = LoadedModel(network=Flat().eval(), description={"sampling": 0.2})
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    with pytest.warns(SamplingWarning, match="outside the trained range"):
        detect_atoms(image, model, sampling=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SamplingWarning)
        assert len(detect_atoms(image, model, sampling=1.0)) == 0


def test_the_command_line_says_a_bad_configuration_in_one_line(tmp_path, capsys):
    from napari_tem_atoms.cli import main

    assert main(["train", str(tmp_path / "missing.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.toml" in err and len(err.splitlines()) == 1
