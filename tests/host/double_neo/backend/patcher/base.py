"""Forge Neo's backend/patcher/base.py ``ModelPatcher`` (ComfyUI v0.7's): the constructor, and what the memory
manager reads (``model_size``, ``model_patches_models``, ``is_clone``, ``detach``). Like Neo's, the constructor
writes ``model.device`` and the low-VRAM counters onto the wrapped module."""

from backend import memory_management


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.model.device = current_device or offload_device
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.parent = None
        for attr, default in (("model_loaded_weight_memory", 0), ("lowvram_patch_counter", 0),
                              ("model_lowvram", False), ("current_weight_patches_uuid", None),
                              ("model_offload_buffer_memory", 0)):
            if not hasattr(self.model, attr):
                setattr(self.model, attr, default)

    @property
    def current_device(self):
        return self.model.device

    @current_device.setter
    def current_device(self, device):  # the double's memory manager moves it
        self.model.device = device

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = memory_management.module_size(self.model)
        return self.size

    def model_patches_models(self):
        return []

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def detach(self, unpatch_all=True):
        self.model.to(self.offload_device)
        return self.model
