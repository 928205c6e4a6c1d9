"""Networks and the registry of trained models (bundled or fetched; loaded without pickle)."""

from .description import FORMAT_VERSION, ModelDescription, describe
from .registry import (
    REGISTRY,
    LoadedModel,
    ModelEntry,
    load_cached_model,
    load_model,
    model_description,
    model_metadata,
    model_path,
    read_description,
    registered_models,
    save_model,
    takes_conditions,
)

__all__ = ["FORMAT_VERSION", "REGISTRY", "LoadedModel", "ModelDescription", "ModelEntry",
           "describe", "load_cached_model", "load_model", "model_description", "model_metadata",
           "model_path", "read_description", "registered_models", "save_model",
           "takes_conditions"]
