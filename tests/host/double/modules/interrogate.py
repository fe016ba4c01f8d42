"""modules/interrogate.py: a fake built-in interrogator (no weights)."""


def category_types():
    return ["artists", "flavors", "mediums", "movements"]


class InterrogateModels:
    def __init__(self, content_dir):
        self.content_dir = content_dir
        self.calls = 0

    def load(self):
        pass

    def unload(self):
        pass

    def send_blip_to_ram(self):
        pass

    def send_clip_to_ram(self):
        pass

    def categories(self):
        return []

    def generate_caption(self, pil_image):
        return "a picture"

    def interrogate(self, pil_image):
        self.calls += 1
        return f"a picture, {pil_image.width}x{pil_image.height}"
