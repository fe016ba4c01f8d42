"""GPU etiquette (docs/hosts.md, GPU etiquette): the A1111 recipe and Forge's memory manager, seen from the host double.

The fake model records every ``.to(device, dtype)``; the double records ``lowvram.send_everything_to_cpu``,
``devices.torch_gc`` and Forge's ``load_models_gpu``/``soft_empty_cache``. "cuda" is only a name here: the fake
model never really moves, so these tests run on any machine.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from PIL import Image

IMAGE = Image.new("RGB", (16, 12), "white")


def caption_once(model="shapes-demo"):
    from clipcap_webui import memory, models

    return memory.run_caption(models.get_manager(), [IMAGE], model=model)[0].text


def on_gpu(monkeypatch):
    """Pretend the A1111 host found a GPU for interrogation."""
    from modules import devices

    monkeypatch.setattr(devices, "device_interrogate", torch.device("cuda"))


def test_a1111_recipe_with_medvram(make_webui, fake_models, monkeypatch):
    webui = make_webui("a1111", argv=["--medvram"])
    from modules import devices, lowvram

    on_gpu(monkeypatch)
    loader = fake_models()
    gc_before = devices.torch_gc_calls
    assert caption_once() == "a 16x12 picture"
    model = loader.loaded[0]
    assert model.moves == [("cuda", torch.float16), ("cpu", None)]  # to the interrogate device in fp16, then back
    assert lowvram.calls == ["send_everything_to_cpu"]  # the module parked on the GPU was evicted first
    call = model.calls[0]
    assert call["queue_locked"] is True  # serialised with generation
    assert call["torch_gc_calls"] == gc_before + 1  # GC after the eviction, before the call
    assert devices.torch_gc_calls == gc_before + 2  # and after moving back
    assert webui.errors() == []


def test_a1111_without_lowvram_flags_evicts_nothing(make_webui, fake_models, monkeypatch):
    make_webui("a1111")
    from modules import lowvram

    on_gpu(monkeypatch)
    fake_models()
    caption_once()
    assert lowvram.calls == []


@pytest.mark.parametrize("argv, moves", [
    (["--no-half"], [("cuda", torch.float32), ("cpu", None)]),
    (["--use-cpu", "interrogate"], [("cpu", torch.float32)]),
    (["--use-cpu", "all"], [("cpu", torch.float32)]),
])
def test_a1111_precision_and_device_flags(make_webui, fake_models, monkeypatch, argv, moves):
    make_webui("a1111", argv=argv)
    from modules import devices

    if not any(a in argv for a in ("interrogate", "all")):
        on_gpu(monkeypatch)
    else:
        assert devices.device_interrogate == devices.cpu  # set by the host from --use-cpu
    loader = fake_models()
    caption_once()
    assert loader.loaded[0].moves == moves


def test_a1111_keep_in_vram_setting(make_webui, fake_models, monkeypatch):
    make_webui("a1111", config={"clipcap_keep_in_vram": True})
    on_gpu(monkeypatch)
    loader = fake_models()
    caption_once()
    caption_once()
    assert loader.loaded[0].moves == [("cuda", torch.float16)] * 2  # never sent back to the CPU


def test_forge_memory_manager(make_webui, fake_models):
    webui = make_webui("forge")
    from backend import memory_management
    from modules import lowvram

    from clipcap_webui import memory

    loader = fake_models()
    assert isinstance(memory.make_policy(), memory.ForgePolicy)
    empties = memory_management.soft_empty_cache_calls
    caption_once()
    caption_once()
    model = loader.loaded[0]
    loads = [c for c in memory_management.calls if c[0] == "load_models_gpu"]
    assert len(loads) == 2
    (patcher,), (again,) = loads[0][1], loads[1][1]
    assert patcher is again  # one patcher per model, kept referenced
    assert isinstance(patcher.model, torch.nn.ModuleDict) and patcher.model["model"] is model.model
    assert patcher.load_device == memory_management.text_encoder_device()
    assert patcher.offload_device == memory_management.text_encoder_offload_device()
    assert memory_management.soft_empty_cache_calls >= empties + 2
    assert patcher in memory_management.current_loaded_models
    assert model.moves == [(None, torch.float32)]  # cast once for the load device (fp16 only on a GPU)
    assert all(c["queue_locked"] for c in model.calls)
    assert lowvram.calls == []
    assert webui.errors() == []


def test_forge_policy_wraps_a_real_captioner(make_webui):
    make_webui("forge")
    from backend import memory_management

    from clipcap_webui import models

    assert caption_once()  # the bundled demo model, through ModelPatcher + load_models_gpu
    patcher = [c for c in memory_management.calls if c[0] == "load_models_gpu"][-1][1][0]
    captioner = models.get_manager().get("shapes-demo")
    assert {id(p) for p in patcher.model.parameters()} == \
        {id(p) for p in captioner.model.parameters()} | {id(p) for p in captioner.clip.model.parameters()}


@pytest.mark.parametrize("mode", ["a1111", "forge", "neo", "classic"])
def test_button_waits_for_a_running_generation_without_deadlock(make_webui, fake_models, mode):
    """A generation holds queue_lock and captions from inside (issue 7's path); a button click meanwhile waits."""
    make_webui(mode)
    from modules import call_queue

    from clipcap_webui import memory, models

    loader = fake_models()
    manager = models.get_manager()
    order: list[str] = []
    started = threading.Event()

    def generation():
        with call_queue.queue_lock, memory.inside_generation():
            started.set()
            time.sleep(0.3)
            manager.caption([IMAGE], model="shapes-demo")  # inside the generation: must not wait for itself
            order.append("generation")

    def click():
        started.wait()
        caption_once()
        order.append("click")

    threads = [threading.Thread(target=generation), threading.Thread(target=click)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert order == ["generation", "click"]
    assert [c["queue_locked"] for c in loader.loaded[0].calls] == [True, True]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a1111_real_model_visits_the_gpu_in_fp16_and_goes_back(make_webui):
    make_webui("a1111")  # devices.device_interrogate: the optimal device, CUDA here
    from clipcap_webui import models

    captioner = models.get_manager().get("shapes-demo")
    seen = {}
    original = captioner.caption

    def spy(images, **kwargs):
        seen["device"], seen["dtype"] = captioner.device.type, next(captioner.model.parameters()).dtype
        return original(images, **kwargs)

    captioner.caption = spy
    assert caption_once()
    assert seen == {"device": "cuda", "dtype": torch.float16}
    assert captioner.device.type == "cpu"


def test_forge_sees_the_grammar_head_once_it_is_loaded(make_webui):
    """rerank="clip+grammar" loads the bundled grammar head on first use; from then on Forge manages its weights
    with the captioner's."""
    make_webui("forge")
    from backend import memory_management

    from clipcap_webui import models

    assert caption_once()
    captioner = models.get_manager().get("shapes-demo")
    assert captioner.grammar is None
    from PIL import Image

    from clipcap_webui.memory import run_caption

    run_caption(models.get_manager(), [Image.new("RGB", (64, 64), "red")], model="shapes-demo", decoding="beam",
                num_candidates=3, rerank="clip+grammar")
    assert captioner.grammar is not None
    run_caption(models.get_manager(), [Image.new("RGB", (64, 64), "red")], model="shapes-demo", decoding="greedy")
    patcher = [c for c in memory_management.calls if c[0] == "load_models_gpu"][-1][1][0]
    managed = {id(p) for p in patcher.model.parameters()}
    assert {id(p) for p in captioner.grammar.model.parameters()} <= managed
    assert {id(p) for p in captioner.model.parameters()} <= managed


# ------------------------------------------------------------------------- Forge Neo and Forge Classic memory managers
class HostModel(torch.nn.Module):
    """Stands in for the host's own diffusion model (``size`` bytes of weights)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size // 4))


@pytest.mark.parametrize("mode", ["neo", "classic"])
def test_the_hosts_memory_manager_evicts_and_reloads_the_captioner(make_webui, fake_models, mode):
    """Neo (backend.memory_management, ComfyUI-style, weakly held entries) and Classic (ldm_patched's): the captioner
    is registered as a ModelPatcher, so the host can evict it when its own model needs the room, and the next
    caption loads it again; the policy keeps the patcher alive (Neo drops dead entries)."""
    import gc

    make_webui(mode)
    from modules._mode import memory_management

    from clipcap_webui import memory, models

    mm = memory_management()
    patcher_cls = memory.host.forge_model_patcher()
    assert patcher_cls.__module__ == ("backend.patcher.base" if mode == "neo" else "ldm_patched.modules.model_patcher")
    loader = fake_models()
    policy = models.get_manager().policy
    assert type(policy).__name__ == ("ForgePolicy" if mode == "neo" else "ClassicPolicy")

    assert caption_once() == "a 16x12 picture"
    ours = policy.patcher(loader.loaded[0])
    gc.collect()  # Neo's entries are weak references: only the policy's keeps ours alive
    assert mm.loaded_models()[0] is ours and ("model_load", ours) in mm.calls
    assert loader.loaded[0].calls[0]["queue_locked"]

    # the host loads its own model, too big to sit beside ours: the manager evicts the captioner
    mm.set_budget(ours.model_size() + 4096)
    host_model = patcher_cls(HostModel(8192), load_device=mm.get_torch_device(), offload_device=torch.device("cpu"))
    mm.load_models_gpu([host_model])
    assert ("model_unload", ours) in mm.calls
    assert mm.loaded_models() == [host_model]
    assert ours.current_device == torch.device("cpu")

    # the next caption asks the manager again: ours is reloaded, the host's model evicted in turn
    del mm.calls[:]
    assert caption_once() == "a 16x12 picture"
    assert ("model_load", ours) in mm.calls and ("model_unload", host_model) in mm.calls
    assert mm.loaded_models() == [ours]
    assert len(loader.loaded) == 1  # the same captioner: evicted from VRAM, never reloaded from disk

    # "Unload all models" (the host's button) evicts it too
    mm.unload_all_models()
    assert mm.loaded_models() == [] and ours.current_device == torch.device("cpu")
    assert caption_once() == "a 16x12 picture" and mm.loaded_models() == [ours]
    mm.set_budget(8 << 30)
