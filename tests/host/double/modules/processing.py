"""modules/processing.py: just the classes extensions reference (no sampling)."""


class StableDiffusionProcessing:
    def __init__(self, prompt="", negative_prompt="", seed=-1, width=512, height=512, n_iter=1, batch_size=1,
                 outpath_samples=None, script_args=None, **kwargs):
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.seed = seed
        self.width = width
        self.height = height
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.outpath_samples = outpath_samples
        self.script_args = list(script_args or [])
        self.extra_generation_params = {}
        self.all_prompts = [prompt] * (n_iter * batch_size)
        self.all_seeds = [seed] * (n_iter * batch_size)
        for k, v in kwargs.items():
            setattr(self, k, v)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    pass


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images=None, **kwargs):
        super().__init__(**kwargs)
        self.init_images = init_images or []


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_seeds=None,
                 infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.seed = seed
        self.info = info
        self.infotexts = infotexts or [info] * len(images_list)
        self.comments = comments
        self.all_prompts = all_prompts or p.all_prompts
        self.all_seeds = all_seeds or p.all_seeds
