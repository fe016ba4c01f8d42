"""modules/sd_models.py: no checkpoint is ever loaded in the double."""

from modules import script_callbacks


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v is not None:
            script_callbacks.model_loaded_callback(v)


model_data = SdModelData()
calls = []


def send_model_to_cpu(m):
    calls.append("send_model_to_cpu")


def send_model_to_device(m):
    calls.append("send_model_to_device")


def unload_model_weights(sd_model=None, info=None):
    calls.append("unload_model_weights")
    send_model_to_cpu(sd_model or model_data.sd_model)
