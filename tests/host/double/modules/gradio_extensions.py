"""Forge's spelling of modules/gradio_extensons.py."""

from modules.gradio_extensons import add_classes_to_gradio_component, patch, unpatch  # noqa: F401
