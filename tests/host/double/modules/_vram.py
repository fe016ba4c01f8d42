"""The bookkeeping behind the Neo and Classic memory-manager doubles (double_neo/backend/memory_management.py,
double_classic/ldm_patched/modules/model_management.py): ComfyUI-style ``current_loaded_models`` (most recent first),
a VRAM budget, and eviction of the least recently used entries the current request does not need.

The double has no GPU: whatever ``get_torch_device()`` returns counts as the accelerator, ``budget`` bytes big, so
tests can watch a model being evicted (moved to its offload device) and loaded again.
"""

import weakref

import torch


def module_size(module, exclude_device=None):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values()
               if exclude_device is None or t.device != exclude_device)


class LoadedModel:
    """One entry of ``current_loaded_models``. ``weak``: Neo's (ComfyUI's) entries hold the patcher through a weak
    reference (an entry whose patcher died "is dead" and is dropped with a warning); Classic's hold it strongly."""

    def __init__(self, patcher, *, weak: bool) -> None:
        self._ref = weakref.ref(patcher) if weak else (lambda p=patcher: p)
        self.device = patcher.load_device
        self.size = patcher.model_size()

    @property
    def model(self):
        return self._ref()

    def is_dead(self) -> bool:
        return self._ref() is None

    def __eq__(self, other):
        return isinstance(other, LoadedModel) and self.model is not None and self.model is other.model


class VRAM:
    """``calls`` records ("load_models_gpu", [patchers]), ("model_load", patcher), ("model_unload", patcher),
    ("unload_all_models",), ("soft_empty_cache",)."""

    def __init__(self, *, weak: bool, budget: int = 8 << 30) -> None:
        self.weak = weak
        self.budget = budget
        self.calls = []
        self.current_loaded_models = []
        self.soft_empty_cache_calls = 0

    def used(self, device) -> int:
        return sum(m.size for m in self.current_loaded_models if not m.is_dead() and m.device == device)

    def free(self, device) -> int:
        return self.budget - self.used(device)

    def cleanup_dead(self) -> None:
        for m in list(self.current_loaded_models):
            if m.is_dead():  # Neo: a dead weak reference (Classic's entries hold their patcher)
                self.current_loaded_models.remove(m)

    def unload(self, entry) -> None:
        patcher = entry.model
        if patcher is not None:
            self.calls.append(("model_unload", patcher))
            patcher.model.to(patcher.offload_device)
            patcher.current_device = patcher.offload_device

    def free_memory(self, memory_required, device, keep_loaded=()):
        unloaded = []
        for entry in reversed(list(self.current_loaded_models)):  # least recently used first
            if self.free(device) >= memory_required:
                break
            if entry.device == device and entry not in keep_loaded:
                self.unload(entry)
                self.current_loaded_models.remove(entry)
                unloaded.append(entry)
        if unloaded:
            self.soft_empty_cache()
        return unloaded

    def load_models_gpu(self, models, memory_required=0, **kwargs):
        self.calls.append(("load_models_gpu", list(models)))
        self.cleanup_dead()
        wanted = []
        for patcher in models:
            wanted.append(patcher)
            wanted.extend(getattr(patcher, "model_patches_models", lambda: [])())
        entries = []
        for patcher in wanted:
            entry = LoadedModel(patcher, weak=self.weak)
            if entry in self.current_loaded_models:
                entry = self.current_loaded_models.pop(self.current_loaded_models.index(entry))
                entries.append((entry, False))
            else:
                entries.append((entry, True))
        need = {}
        for entry, new in entries:
            if new:
                need[entry.device] = need.get(entry.device, 0) + entry.size
        keep = [e for e, _ in entries]
        for device, size in need.items():
            self.free_memory(size + memory_required, device, keep_loaded=keep)
        for entry, new in reversed(entries):
            patcher = entry.model
            if new or patcher.current_device != patcher.load_device:
                self.calls.append(("model_load", patcher))
                patcher.model.to(patcher.load_device)
                patcher.current_device = patcher.load_device
            self.current_loaded_models.insert(0, entry)

    def unload_all_models(self):
        self.calls.append(("unload_all_models",))
        for entry in list(self.current_loaded_models):
            self.unload(entry)
        self.current_loaded_models.clear()

    def soft_empty_cache(self, force=False):
        self.soft_empty_cache_calls += 1
        self.calls.append(("soft_empty_cache",))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def loaded(self):
        """The patchers loaded now, most recent first."""
        return [m.model for m in self.current_loaded_models if not m.is_dead()]
