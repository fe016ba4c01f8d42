"""modules/lowvram.py: records ``send_everything_to_cpu`` calls (``calls``). Forge: every function is a no-op."""

from modules._mode import FORGE

module_in_gpu = None
calls = []


def send_everything_to_cpu():
    global module_in_gpu
    calls.append("send_everything_to_cpu")
    if FORGE:
        return
    if module_in_gpu is not None:
        module_in_gpu.to("cpu")
    module_in_gpu = None


def is_needed(sd_model):
    from modules import shared

    if FORGE:
        return False
    opts = shared.cmd_opts
    return getattr(opts, "lowvram", False) or getattr(opts, "medvram", False) or (
        getattr(opts, "medvram_sdxl", False) and getattr(sd_model, "is_sdxl", False))


def apply(sd_model):
    sd_model.lowvram = is_needed(sd_model)


def is_enabled(sd_model):
    return getattr(sd_model, "lowvram", False)
