from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

from modules._mode import CLASSIC, NEO

if not (NEO or CLASSIC):  # Neo and Classic removed the interrogate API models
    class InterrogateRequest(BaseModel):
        image: str = Field(default="", title="Image", description="Image to work on, must be a Base64 string containing the image's data.")
        model: str = Field(default="clip", title="Model", description="The interrogate model used.")

    class InterrogateResponse(BaseModel):
        caption: str = Field(default=None, title="Caption", description="The generated caption for the image.")


class StableDiffusionTxt2ImgProcessingAPI(BaseModel):
    """The fields of the host's request model that matter here (the host generates it from the processing class)."""

    prompt: str = Field(default="")
    negative_prompt: str = Field(default="")
    seed: int = Field(default=-1)
    width: int = Field(default=64)
    height: int = Field(default=64)
    batch_size: int = Field(default=1)
    n_iter: int = Field(default=1)
    steps: int = Field(default=20)
    cfg_scale: float = Field(default=7.0)
    sampler_name: str = Field(default="Euler a")
    infotext: Optional[str] = Field(default=None)
    script_name: Optional[str] = Field(default=None)
    script_args: List[Any] = Field(default=[])
    send_images: bool = Field(default=True)
    save_images: bool = Field(default=False)
    alwayson_scripts: Dict[str, Any] = Field(default={})


class StableDiffusionImg2ImgProcessingAPI(StableDiffusionTxt2ImgProcessingAPI):
    init_images: Optional[List[str]] = Field(default=None)
    denoising_strength: float = Field(default=0.75)


class TextToImageResponse(BaseModel):
    images: Optional[List[str]] = Field(default=None, title="Image", description="The generated image in base64 format.")
    parameters: dict
    info: str


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtrasSingleImageRequest(BaseModel):
    image: str = Field(default="")
    upscaling_resize: float = Field(default=2)


class ExtrasSingleImageResponse(BaseModel):
    image: Optional[str] = Field(default=None)
    html_info: str = Field(default="")
