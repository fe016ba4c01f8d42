"""modules/processing.py: ``process_images`` with the host's order of script hooks, saves and infotexts, and no
sampling (A1111 v1.10 ``process_images_inner``; Forge keeps the same order).

"Sampling" draws flat-coloured images (a colour from the seed) of ``p.width x p.height``, or takes them from
``p.fake_samples`` (a callable ``(p, batch_number) -> list of PIL images``) when a test sets it. Everything around it
is the host's: ``before_process``, ``setup_prompts``, ``process``; per batch ``before_process_batch``,
``process_batch``, ``postprocess_batch`` (a tensor in [0, 1]), ``postprocess_batch_list``; per image
``p.batch_index``, ``postprocess_image``, ``postprocess_maskoverlay``, ``postprocess_image_after_composite``,
``images.save_image(..., info=infotext(i), p=p)`` when ``p.save_samples()``, the infotext into ``image.info``; then
the grid (returned and/or saved), ``Processed`` and ``postprocess(p, processed)``. ``create_infotext`` resolves list
and callable ``extra_generation_params`` values as the host does.
"""

import json
import random

import numpy as np
from PIL import Image

from modules import errors, images, infotext_utils, scripts
from modules.shared import opts, state


class StableDiffusionProcessing:
    def __init__(self, sd_model=None, outpath_samples=None, outpath_grids=None, prompt="", styles=None, seed=-1,
                 subseed=-1, subseed_strength=0, seed_resize_from_h=-1, seed_resize_from_w=-1, seed_enable_extras=True,
                 sampler_name="Euler a", scheduler=None, batch_size=1, n_iter=1, steps=20, cfg_scale=7.0, width=512,
                 height=512, restore_faces=None, tiling=None, do_not_save_samples=False, do_not_save_grid=False,
                 extra_generation_params=None, overlay_images=None, negative_prompt="", eta=None,
                 do_not_reload_embeddings=False, denoising_strength=0, override_settings=None,
                 override_settings_restore_afterwards=True, sampler_index=None, refiner_checkpoint=None,
                 refiner_switch_at=None, disable_extra_networks=False, comments=None, script_args=None, **kwargs):
        self.sd_model = sd_model
        self.outpath_samples = outpath_samples
        self.outpath_grids = outpath_grids
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.styles = styles or []
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.sampler_name = sampler_name
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.steps = steps
        self.cfg_scale = cfg_scale
        self.width = width
        self.height = height
        self.restore_faces = restore_faces
        self.tiling = tiling
        self.do_not_save_samples = do_not_save_samples
        self.do_not_save_grid = do_not_save_grid
        self.extra_generation_params = dict(extra_generation_params or {})
        self.overlay_images = overlay_images
        self.eta = eta
        self.denoising_strength = denoising_strength
        self.override_settings = dict(override_settings or {})
        self.override_settings_restore_afterwards = override_settings_restore_afterwards
        self.disable_extra_networks = disable_extra_networks
        self.comments = dict(comments or {})
        self.scripts = None
        self.script_args = script_args if script_args is not None else []
        self.all_prompts = None
        self.all_negative_prompts = None
        self.all_seeds = None
        self.all_subseeds = None
        self.iteration = 0
        self.batch_index = 0
        self.main_prompt = None
        self.main_negative_prompt = None
        self.prompts = None
        self.negative_prompts = None
        self.seeds = None
        self.subseeds = None
        self.color_corrections = None
        self.paste_to = None
        self.is_api = False
        self.user = None
        self.fake_samples = None
        for k, v in kwargs.items():
            setattr(self, k, v)

    def comment(self, text):
        self.comments[text] = 1

    def save_samples(self):
        return opts.samples_save and not self.do_not_save_samples and (opts.save_incomplete_images or not state.interrupted and not state.skipped)

    def setup_prompts(self):
        if isinstance(self.prompt, list):
            self.all_prompts = self.prompt
        else:
            self.all_prompts = self.batch_size * self.n_iter * [self.prompt]
        if isinstance(self.negative_prompt, list):
            self.all_negative_prompts = self.negative_prompt
        else:
            self.all_negative_prompts = [self.negative_prompt] * len(self.all_prompts)
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def sample(self, batch_number):
        if self.fake_samples is not None:
            return list(self.fake_samples(self, batch_number))
        out = []
        for seed in self.seeds:
            rng = random.Random(seed)
            out.append(Image.new("RGB", (self.width, self.height), tuple(rng.randrange(256) for _ in range(3))))
        return out

    def close(self):
        pass


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.enable_hr = enable_hr
        self.hr_scale = hr_scale


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_images=None, resize_mode=0, denoising_strength=0.75, image_cfg_scale=None, mask=None,
                 mask_blur=4, inpainting_fill=0, **kwargs):
        super().__init__(denoising_strength=denoising_strength, **kwargs)
        self.init_images = init_images or []
        self.resize_mode = resize_mode
        self.image_mask = mask
        self.mask_blur = mask_blur
        self.inpainting_fill = inpainting_fill
        self.image_cfg_scale = image_cfg_scale
        self.extra_generation_params["Denoising strength"] = denoising_strength

    def sample(self, batch_number):
        if self.fake_samples is not None:
            return list(self.fake_samples(self, batch_number))
        base = self.init_images[0].convert("RGB").resize((self.width, self.height))
        return [base.copy() for _ in self.seeds]


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.denoising_strength = getattr(p, 'denoising_strength', None)
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = state.job_timestamp
        self.extra_images = []
        self.prompt = self.prompt if not isinstance(self.prompt, list) else self.prompt[0]
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)

    def js(self):
        obj = {
            "prompt": self.all_prompts[0],
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0],
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": self.subseed,
            "all_subseeds": self.all_subseeds,
            "width": self.width,
            "height": self.height,
            "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
            "styles": self.styles,
            "job_timestamp": self.job_timestamp,
        }
        return json.dumps(obj, default=lambda o: None)

    def infotext(self, p, index):
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               position_in_batch=index % self.batch_size, iteration=index // self.batch_size)


def get_fixed_seed(seed):
    if seed == '' or seed is None:
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except Exception:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return seed


def fix_seed(p):
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    generation_params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, 'image_cfg_scale', None),
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        **p.extra_generation_params,
        "User": None,
    }
    for key, value in generation_params.items():
        try:
            if isinstance(value, list):
                generation_params[key] = value[index]
            elif callable(value):
                generation_params[key] = value(**locals())
        except Exception:
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            generation_params[key] = None
    generation_params_text = ", ".join([k if k == v else f'{k}: {infotext_utils.quote(v)}' for k, v in generation_params.items() if v is not None])
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_prompt_text}\n{generation_params_text}".strip()


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored_opts = {k: opts.data[k] if k in opts.data else opts.get_default(k) for k in p.override_settings.keys() if k in opts.data}
    try:
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
        res = process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p):
    import torch

    if isinstance(p.prompt, list):
        assert len(p.prompt) > 0
    else:
        assert p.prompt is not None
    seed = get_fixed_seed(p.seed)
    subseed = get_fixed_seed(p.subseed)
    p.setup_prompts()
    p.all_seeds = [int(seed) + x for x in range(len(p.all_prompts))]
    p.all_subseeds = [int(subseed) + x for x in range(len(p.all_prompts))]
    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []
    if state.job_count == -1:
        state.job_count = p.n_iter
    for n in range(p.n_iter):
        p.iteration = n
        if state.skipped:
            state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
        p.negative_prompts = p.all_negative_prompts[n * p.batch_size:(n + 1) * p.batch_size]
        p.seeds = p.all_seeds[n * p.batch_size:(n + 1) * p.batch_size]
        p.subseeds = p.all_subseeds[n * p.batch_size:(n + 1) * p.batch_size]
        if p.scripts is not None:
            p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
        if len(p.prompts) == 0:
            break
        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)

        samples = p.sample(n)  # the decoded batch, as the host has it after decode_latent_batch: [0, 1] CHW
        x_samples_ddim = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1) for im in samples])
        state.nextjob()

        if p.scripts is not None:
            p.scripts.postprocess_batch(p, x_samples_ddim, batch_number=n)
            p.prompts = p.all_prompts[n * p.batch_size:(n + 1) * p.batch_size]
            p.negative_prompts = p.all_negative_prompts[n * p.batch_size:(n + 1) * p.batch_size]
            batch_params = scripts.PostprocessBatchListArgs(list(x_samples_ddim))
            p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
            x_samples_ddim = batch_params.images

        def infotext(index=0, use_main_prompt=False):
            return create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt, index=index, all_negative_prompts=p.negative_prompts)

        save_samples = p.save_samples()
        for i, x_sample in enumerate(x_samples_ddim):
            p.batch_index = i
            x_sample = 255. * np.moveaxis(x_sample.cpu().numpy(), 0, 2)
            x_sample = x_sample.round().astype(np.uint8)
            image = Image.fromarray(x_sample)
            if p.scripts is not None:
                pp = scripts.PostprocessImageArgs(image)
                p.scripts.postprocess_image(p, pp)
                image = pp.image
            mask_for_overlay = getattr(p, "mask_for_overlay", None)
            overlay_image = None
            if p.scripts is not None:
                ppmo = scripts.PostProcessMaskOverlayArgs(i, mask_for_overlay, overlay_image)
                p.scripts.postprocess_maskoverlay(p, ppmo)
            if p.scripts is not None:
                pp = scripts.PostprocessImageArgs(image)
                p.scripts.postprocess_image_after_composite(p, pp)
                image = pp.image
            if save_samples:
                images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], opts.samples_format, info=infotext(i), p=p)
            text = infotext(i)
            infotexts.append(text)
            if opts.enable_pnginfo:
                image.info["parameters"] = text
            output_images.append(image)
        del x_samples_ddim

    if not infotexts:
        infotexts.append(Processed(p, []).infotext(p, 0))
    p.color_corrections = None
    index_of_first_image = 0
    unwanted_grid_because_of_img_count = len(output_images) < 2 and opts.grid_only_if_multiple
    if (opts.return_grid or opts.grid_save) and not p.do_not_save_grid and not unwanted_grid_because_of_img_count:
        grid = images.image_grid(output_images, p.batch_size)
        if opts.return_grid:
            text = infotext(use_main_prompt=True)
            infotexts.insert(0, text)
            if opts.enable_pnginfo:
                grid.info["parameters"] = text
            output_images.insert(0, grid)
            index_of_first_image = 1
        if opts.grid_save:
            images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format, info=infotext(use_main_prompt=True), short_filename=True, p=p, grid=True)

    res = Processed(p, images_list=output_images, seed=p.all_seeds[0], info=infotexts[0], subseed=p.all_subseeds[0],
                    index_of_first_image=index_of_first_image, infotexts=infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


def run_generation(p, runner):
    """What the txt2img/img2img buttons do with a prepared ``p`` (``modules/txt2img.py``, ``modules/img2img.py``):
    under ``queue_lock`` (``wrap_gradio_gpu_call``), the selectable script or ``process_images``. Forge runs that
    part on its main thread while the caller, holding the lock, waits (``main_thread.run_and_wait_result``)."""
    from modules import call_queue
    from modules._mode import FORGE

    def work():
        processed = runner.run(p, *p.script_args)
        return process_images(p) if processed is None else processed

    with call_queue.queue_lock:
        state.begin(job="generation")
        try:
            if FORGE:
                from modules_forge import main_thread

                return main_thread.run_and_wait_result(work)
            return work()
        finally:
            state.end()


def txt2img(prompt, *script_args, outpath=None, **kwargs):
    """The txt2img button: a ``StableDiffusionProcessingTxt2Img`` with the scripts' arguments, generated."""
    p = StableDiffusionProcessingTxt2Img(prompt=prompt, outpath_samples=outpath or opts.outdir_txt2img_samples,
                                         outpath_grids=opts.outdir_txt2img_grids, **kwargs)
    p.scripts = scripts.scripts_txt2img
    p.script_args = tuple(script_args)
    return run_generation(p, scripts.scripts_txt2img)
