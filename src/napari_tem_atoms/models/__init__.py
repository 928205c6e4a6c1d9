"""Networks and the registry of trained models (bundled or fetched; loaded without pickle)."""

from .registry import (
    REGISTRY,
    LoadedModel,
    ModelEntry,
    load_cached_model,
    load_model,
    model_metadata,
    model_path,
    registered_models,
    save_model,
    takes_conditions,
)

__all__ = ["REGISTRY", "LoadedModel", "ModelEntry", "load_cached_model", "load_model",
           "model_metadata", "model_path", "registered_models", "save_model", "takes_conditions"]
