"""modules/deepbooru.py: a fake tagger."""


class DeepDanbooru:
    def start(self):
        pass

    def stop(self):
        pass

    def tag(self, pil_image):
        return "1girl, solo"


model = DeepDanbooru()
