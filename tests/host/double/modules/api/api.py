"""modules/api/api.py: ``Api`` with the host's auth semantics, ``/sdapi/v1/interrogate`` (docs/hosts.md, HTTP routes), and
``/sdapi/v1/txt2img`` / ``img2img`` with the host's script-argument handling (A1111 v1.10 = Forge): default script
arguments read from a second call of each script's ``ui()``, ``alwayson_scripts`` args laid over them by position,
and the request's ``infotext`` applied through the tab's paste fields (``apply_infotext``). Neo and Classic removed the
interrogator: no ``/sdapi/v1/interrogate`` there, and no ``InterrogateRequest`` / ``InterrogateResponse`` models."""

import base64
import io
from secrets import compare_digest

import gradio as gr
from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import PngImagePlugin

from modules import images, infotext_utils, processing, scripts, shared
from modules._mode import CLASSIC, NEO
from modules.api import models

if not (NEO or CLASSIC):
    from modules import deepbooru


def decode_base64_to_image(encoding):
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        image = images.read(io.BytesIO(base64.b64decode(encoding)))
        return image
    except Exception as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def encode_pil_to_base64(image):
    with io.BytesIO() as output_bytes:
        if isinstance(image, str):
            return image
        if shared.opts.samples_format.lower() == 'png':
            use_metadata = False
            metadata = PngImagePlugin.PngInfo()
            for key, value in image.info.items():
                if isinstance(key, str) and isinstance(value, str):
                    metadata.add_text(key, value)
                    use_metadata = True
            image.save(output_bytes, format="PNG", pnginfo=(metadata if use_metadata else None), quality=shared.opts.jpeg_quality)
        elif shared.opts.samples_format.lower() in ("jpg", "jpeg", "webp"):
            if image.mode == "RGBA":
                image = image.convert("RGB")
            parameters = image.info.get('parameters', None)
            exif_bytes = images._exif_user_comment(parameters or "")
            if shared.opts.samples_format.lower() in ("jpg", "jpeg"):
                image.save(output_bytes, format="JPEG", exif=exif_bytes, quality=shared.opts.jpeg_quality)
            else:
                image.save(output_bytes, format="WEBP", exif=exif_bytes, quality=shared.opts.jpeg_quality)
        else:
            raise HTTPException(status_code=500, detail="Invalid image format")
        return base64.b64encode(output_bytes.getvalue())


def script_name_to_index(name, scripts_list):
    try:
        return [script.title().lower() for script in scripts_list].index(name.lower())
    except Exception as e:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found") from e


class Api:
    def __init__(self, app, queue_lock):
        if shared.cmd_opts.api_auth:
            self.credentials = {}
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password
        self.router = APIRouter()
        self.app = app
        self.queue_lock = queue_lock
        if not (NEO or CLASSIC):
            self.add_api_route("/sdapi/v1/interrogate", self.interrogateapi, methods=["POST"])
        self.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"], response_model=models.TextToImageResponse)
        self.add_api_route("/sdapi/v1/img2img", self.img2imgapi, methods=["POST"], response_model=models.ImageToImageResponse)
        self.default_script_arg_txt2img = []
        self.default_script_arg_img2img = []

    def add_api_route(self, path: str, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    def interrogateapi(self, interrogatereq: "models.InterrogateRequest"):
        image_b64 = interrogatereq.image
        if image_b64 is None:
            raise HTTPException(status_code=404, detail="Image not found")
        img = decode_base64_to_image(image_b64).convert('RGB')
        with self.queue_lock:
            if interrogatereq.model == "clip":
                processed = shared.interrogator.interrogate(img)
            elif interrogatereq.model == "deepdanbooru":
                processed = deepbooru.model.tag(img)
            else:
                raise HTTPException(status_code=404, detail="Model not found")
        return models.InterrogateResponse(caption=processed)

    # ------------------------------------------------------------------------------------------------ generation
    def get_selectable_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None, None
        script_idx = script_name_to_index(script_name, script_runner.selectable_scripts)
        return script_runner.selectable_scripts[script_idx], script_idx

    def get_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None
        script_idx = script_name_to_index(script_name, script_runner.scripts)
        return script_runner.scripts[script_idx]

    def init_default_script_args(self, script_runner):
        last_arg_index = 1
        for script in script_runner.scripts:
            if last_arg_index < script.args_to:
                last_arg_index = script.args_to
        script_args = [None] * last_arg_index
        script_args[0] = 0
        with gr.Blocks():  # will throw errors calling ui function without this
            for script in script_runner.scripts:
                if script.ui(script.is_img2img):
                    ui_default_values = []
                    for elem in script.ui(script.is_img2img):
                        ui_default_values.append(elem.value)
                    script_args[script.args_from:script.args_to] = ui_default_values
        return script_args

    def init_script_args(self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, *, input_script_args=None):
        script_args = default_script_args.copy()
        if input_script_args is not None:
            for index, value in input_script_args.items():
                script_args[index] = value
        if selectable_scripts:
            script_args[selectable_scripts.args_from:selectable_scripts.args_to] = request.script_args
            script_args[0] = selectable_idx + 1
        if request.alwayson_scripts:
            for alwayson_script_name in request.alwayson_scripts.keys():
                alwayson_script = self.get_script(alwayson_script_name, script_runner)
                if alwayson_script is None:
                    raise HTTPException(status_code=422, detail=f"always on script {alwayson_script_name} not found")
                if alwayson_script.alwayson is False:
                    raise HTTPException(status_code=422, detail="Cannot have a selectable script in the always on scripts params")
                if "args" in request.alwayson_scripts[alwayson_script_name]:
                    for idx in range(0, min((alwayson_script.args_to - alwayson_script.args_from), len(request.alwayson_scripts[alwayson_script_name]["args"]))):
                        script_args[alwayson_script.args_from + idx] = request.alwayson_scripts[alwayson_script_name]["args"][idx]
        return script_args

    def apply_infotext(self, request, tabname, *, script_runner=None, mentioned_script_args=None):
        """The request's ``infotext`` through the tab's paste fields: request fields, then script arguments."""
        if not request.infotext:
            return {}
        possible_fields = infotext_utils.paste_fields[tabname]["fields"]
        set_fields = request.model_dump(exclude_unset=True) if hasattr(request, "model_dump") else request.dict(exclude_unset=True)
        params = infotext_utils.parse_generation_parameters(request.infotext)
        request_fields = getattr(type(request), "model_fields", None) or request.__fields__

        def get_field_value(field, params):
            value = field.function(params) if field.function else params.get(field.label)
            if value is None:
                return None
            if field.api in request_fields:
                target_type = type(getattr(request, field.api))
            else:
                target_type = type(field.component.value)
            if target_type == type(None):
                return None
            if isinstance(value, dict) and value.get('__type__') == 'generic_update':
                value = value.get('value')
            if value is not None and not isinstance(value, target_type):
                value = target_type(value)
            return value

        for field in possible_fields:
            if not field.api:
                continue
            if field.api in set_fields:
                continue
            value = get_field_value(field, params)
            if value is not None:
                setattr(request, field.api, value)
        if script_runner is not None and mentioned_script_args is not None:
            indexes = {v: i for i, v in enumerate(script_runner.inputs) if v is not None}
            script_fields = ((field, indexes[field.component]) for field in possible_fields if field.component in indexes)
            for field, index in script_fields:
                value = get_field_value(field, params)
                if value is None:
                    continue
                mentioned_script_args[index] = value
        return params

    def _generate(self, req, tabname, script_runner, make_p):
        infotext_script_args = {}
        self.apply_infotext(req, tabname, script_runner=script_runner, mentioned_script_args=infotext_script_args)
        selectable_scripts, selectable_script_idx = self.get_selectable_script(req.script_name, script_runner)
        attr = f"default_script_arg_{tabname}"
        if not getattr(self, attr):
            setattr(self, attr, self.init_default_script_args(script_runner))
        script_args = self.init_script_args(req, getattr(self, attr), selectable_scripts, selectable_script_idx, script_runner, input_script_args=infotext_script_args)
        with self.queue_lock:
            p = make_p()
            p.is_api = True
            p.scripts = script_runner
            try:
                shared.state.begin(job=f"scripts_{tabname}")
                if selectable_scripts is not None:
                    p.script_args = script_args
                    processed = script_runner.run(p, *p.script_args)
                else:
                    p.script_args = tuple(script_args)
                    processed = processing.process_images(p)
            finally:
                shared.state.end()
        b64images = list(map(encode_pil_to_base64, processed.images)) if req.send_images else []
        return b64images, processed.js()

    def _processing_args(self, req):
        return dict(prompt=req.prompt, negative_prompt=req.negative_prompt, seed=req.seed, width=req.width,
                    height=req.height, batch_size=req.batch_size, n_iter=req.n_iter, steps=req.steps,
                    cfg_scale=req.cfg_scale, sampler_name=req.sampler_name,
                    do_not_save_samples=not req.save_images, do_not_save_grid=not req.save_images)

    def text2imgapi(self, txt2imgreq: models.StableDiffusionTxt2ImgProcessingAPI):
        def make_p():
            return processing.StableDiffusionProcessingTxt2Img(
                outpath_samples=shared.opts.outdir_txt2img_samples, outpath_grids=shared.opts.outdir_txt2img_grids,
                **self._processing_args(txt2imgreq))
        b64images, info = self._generate(txt2imgreq, "txt2img", scripts.scripts_txt2img, make_p)
        return models.TextToImageResponse(images=b64images, parameters={}, info=info)

    def img2imgapi(self, img2imgreq: models.StableDiffusionImg2ImgProcessingAPI):
        init_images = img2imgreq.init_images
        if init_images is None:
            raise HTTPException(status_code=404, detail="Init image not found")

        def make_p():
            return processing.StableDiffusionProcessingImg2Img(
                init_images=[decode_base64_to_image(x) for x in init_images], denoising_strength=img2imgreq.denoising_strength,
                outpath_samples=shared.opts.outdir_img2img_samples, outpath_grids=shared.opts.outdir_img2img_grids,
                **self._processing_args(img2imgreq))
        b64images, info = self._generate(img2imgreq, "img2img", scripts.scripts_img2img, make_p)
        return models.ImageToImageResponse(images=b64images, parameters={}, info=info)
