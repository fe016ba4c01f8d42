"""Forge Classic's ldm_patched/modules/model_patcher.py ``ModelPatcher``: the constructor and what the memory manager
calls on it (``model_size``, ``patch_model``, ``unpatch_model``, ``model_patches_to``, ``model_dtype``,
``is_clone``)."""

from ldm_patched.modules import model_management


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, weight_inplace_update=False):
        self.size = size
        self._model = model
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = self.offload_device if current_device is None else current_device
        self.weight_inplace_update = weight_inplace_update
        self.model_size()

    @property
    def model(self):
        return self._model

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = model_management.module_size(self.model)
        return self.size

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def model_patches_to(self, device, *, dtype=None):
        pass

    def model_dtype(self):
        if hasattr(self.model, "get_dtype"):
            return self.model.get_dtype()

    def patch_model(self, device_to=None, patch_weights=True):
        if device_to is not None:
            self.model.to(device_to)
            self.current_device = device_to
        return self.model

    def unpatch_model(self, device_to=None, **kwargs):
        if device_to is not None:
            self.model.to(device_to)
            self.current_device = device_to
