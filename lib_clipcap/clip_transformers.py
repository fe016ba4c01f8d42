"""A CLIP backbone on transformers' ``CLIPModel``, for environments without a usable open_clip.

Why: Forge Classic pins ``open-clip-torch==1.3.0`` (June 2022: no ``get_tokenizer``, no ``list_models`` /
``add_model_config`` as the open_clip backbone uses them, no Hub weights) and re-pins it after every extension
installer, so the extension cannot bring a newer one; every host pins a transformers that has ``CLIPModel`` (Classic
4.30.2). :func:`lib_clipcap.clip.clip_backend` picks this backbone when open_clip is missing or older than
:data:`lib_clipcap.clip.MIN_OPEN_CLIP`, or when ``CLIPCAP_CLIP_BACKEND=transformers`` asks for it.

It takes what the open_clip backbone takes and answers the same: CLIPs are described by open_clip's model-config JSON
(the bundled tiny demo CLIP is one) or by an open_clip ViT model name (:data:`OPEN_CLIP_CONFIGS`, bundled here so that
no open_clip is needed); weights are local files in open_clip's layout (what users and this project have), converted
to transformers' layout in memory (:func:`hf_state_dict_from_open_clip`), or files already in transformers' layout.
Features equal open_clip's for the same weights to float rounding (tests/test_clip_transformers.py), tokens are
open_clip's (:mod:`lib_clipcap.clip_bpe`) and images are preprocessed with open_clip's eval transform. What it cannot
do: download a pretrained tag (pass a local weights file), and non-ViT towers (ResNet, timm, HF text towers).

``.model`` is a :class:`TransformersClip`: a ``torch.nn.Module`` with open_clip's face (``visual``,
``encode_image``, ``encode_text(normalize=)``, ``context_length``), which is what the rest of the library reads.
transformers and torchvision are imported on first use only.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .clip_base import BackboneBase
from .clip_bpe import ClipBpeTokenizer, package_file
from .errors import ClipCapError, IncompatibleCheckpointError, MissingFileError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_TEXT_DEFAULT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}


def _vit(embed_dim: int, image_size: int, layers: int, width: int, patch_size: int, text_width: int, text_heads: int,
         text_layers: int, head_width: int = 64) -> dict[str, Any]:
    vision = {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size}
    if head_width != 64:
        vision["head_width"] = head_width
    return {"embed_dim": embed_dim, "vision_cfg": vision,
            "text_cfg": {**_TEXT_DEFAULT, "width": text_width, "heads": text_heads, "layers": text_layers}}


#: open_clip's model configs (``open_clip/model_configs/<name>.json``, identical in open_clip 1.3.0 and 3.x) of the
#: ViT CLIPs this project's models and tools name, so that a name works without open_clip. ``-quickgelu`` variants
#: are these with ``"quick_gelu": true`` (:func:`open_clip_model_config`). tests/test_clip_transformers.py checks
#: them against the installed open_clip's files.
OPEN_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-B-32": _vit(512, 224, 12, 768, 32, 512, 8, 12),
    "ViT-B-16": _vit(512, 224, 12, 768, 16, 512, 8, 12),
    "ViT-L-14": _vit(768, 224, 24, 1024, 14, 768, 12, 12),
    "ViT-L-14-336": _vit(768, 336, 24, 1024, 14, 768, 12, 12),
    "ViT-H-14": _vit(1024, 224, 32, 1280, 14, 1024, 16, 24, head_width=80),
}

# Vision / text config fields this backbone reproduces, and the others with the one value it can honour (open_clip's
# default). A config that sets anything else describes a tower transformers' CLIP does not have.
_VISION_FIELDS = {"image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size", "patch_dropout",
                  "output_tokens", "final_ln_after_pool", "timm_model_pretrained", "timm_pool", "timm_proj",
                  "timm_proj_bias", "timm_drop", "timm_drop_path", "attn_pooler_queries", "attn_pooler_heads"}
_VISION_DEFAULTS = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
                    "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None, "block_type": None, "qk_norm": False,
                    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                    "scale_fc": False, "timm_model_name": None, "global_average_pool": False,
                    "input_patchnorm": False}
_TEXT_FIELDS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "output_tokens",
                "final_ln_after_pool", "eos_id"}
_TEXT_DEFAULTS = {"hf_tokenizer_name": None, "tokenizer_mode": None, "tokenizer_kwargs": None, "ls_init_value": None,
                  "embed_cls": False, "pad_id": 0, "no_causal_mask": False, "pool_type": "argmax", "proj_bias": False,
                  "proj_type": "linear", "act_kwargs": None, "norm_kwargs": None, "block_type": None,
                  "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
                  "scale_attn": False, "scale_fc": False, "hf_model_name": None, "hf_model_pretrained": True,
                  "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler", "proj": "mlp", "pooler_type": "mean_pooler"}
_TOP_FIELDS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "cast_dtype", "preprocess_cfg",
               "init_logit_scale"}


# ----------------------------------------------------------------------------------------------------- configs
def open_clip_model_config(model: str) -> tuple[str, dict[str, Any]]:
    """``(name, config)`` of a CLIP given as an open_clip model-config JSON path or an open_clip model name.

    A name is looked up in :data:`OPEN_CLIP_CONFIGS` (``-quickgelu`` suffix allowed), then in the installed
    open_clip's ``model_configs`` folder (read as a file; open_clip is not imported, so an old one serves too).

    Raises:
        MissingFileError: a ``.json`` path that does not exist.
        ClipCapError: an unreadable JSON file, or a name this backbone does not know.
    """
    if str(model).endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise MissingFileError(f"CLIP model config not found: {path}")
        try:
            return path.stem, json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ClipCapError(f"CLIP model config {path} is not valid JSON: {e}") from e
    base, quick = (model[: -len("-quickgelu")], True) if model.endswith("-quickgelu") else (model, False)
    cfg = OPEN_CLIP_CONFIGS.get(base)
    if cfg is None:
        found = package_file("open_clip", f"model_configs/{model}.json")
        if found is not None:
            return model, json.loads(found.read_text(encoding="utf-8"))
        raise ClipCapError(
            f"unknown CLIP model {model!r} for the transformers CLIP backbone; it knows "
            f"{', '.join(sorted(OPEN_CLIP_CONFIGS))} (and their -quickgelu variants), or pass the path of an open_clip "
            f"model-config JSON")
    cfg = json.loads(json.dumps(cfg))  # a copy: callers may edit theirs
    if quick:
        cfg["quick_gelu"] = True
    return model, cfg


def check_supported(cfg: Mapping[str, Any], name: str) -> None:
    """Refuse an open_clip config whose towers transformers' ``CLIPModel`` cannot reproduce.

    Raises:
        ClipCapError: naming the first field that needs open_clip (ResNet or timm image towers, HF text towers,
            layer scale, attentional pooling, SigLIP's logit bias, ...).
    """
    def refuse(what: str) -> None:
        raise ClipCapError(
            f"CLIP {name!r} needs open_clip ({what}); the transformers CLIP backbone reproduces open_clip's plain ViT "
            f"CLIPs only. Install open-clip-torch>=2.20 where the host allows it")

    if "embed_dim" not in cfg or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        refuse("the config lacks embed_dim, vision_cfg or text_cfg")
    for key, value in cfg.items():
        if key not in _TOP_FIELDS and not (key == "init_logit_bias" and value is None):
            refuse(f"config field {key!r}")
    for tower, fields, defaults in (("vision_cfg", _VISION_FIELDS, _VISION_DEFAULTS),
                                    ("text_cfg", _TEXT_FIELDS, _TEXT_DEFAULTS)):
        for key, value in dict(cfg[tower]).items():
            if key in fields:
                continue
            if key in defaults and value in (defaults[key], {} if defaults[key] is None else defaults[key]):
                continue
            refuse(f"{tower}.{key} = {value!r}")
    vision = cfg["vision_cfg"]
    if not isinstance(vision.get("layers", 12), int):
        refuse("a ResNet image tower")
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        refuse(f"a non-square image size {size}")
    pre = dict(cfg.get("preprocess_cfg") or {})
    if pre.get("resize_mode", "shortest") != "shortest" or pre.get("interpolation", "bicubic") != "bicubic":
        refuse(f"preprocess_cfg {pre}")


def _image_size(cfg: Mapping[str, Any]) -> int:
    size = cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def hf_clip_config(cfg: Mapping[str, Any]) -> Any:
    """transformers' ``CLIPConfig`` for an open_clip model config (heads = width / head_width as open_clip; the MLP
    width from ``mlp_ratio``; ``quick_gelu`` where open_clip uses QuickGELU, else exact GELU; LayerNorm eps 1e-5,
    open_clip's ``nn.LayerNorm`` default)."""
    from transformers import CLIPConfig

    vision, text = dict(cfg["vision_cfg"]), {**_TEXT_DEFAULT, **dict(cfg["text_cfg"])}
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    v_width, t_width = int(vision.get("width", 768)), int(text["width"])
    vision_config = {
        "hidden_size": v_width, "intermediate_size": int(v_width * float(vision.get("mlp_ratio", 4.0))),
        "num_hidden_layers": int(vision.get("layers", 12)),
        "num_attention_heads": v_width // int(vision.get("head_width", 64)),
        "image_size": _image_size(cfg), "patch_size": int(vision.get("patch_size", 16)), "num_channels": 3,
        "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": int(cfg["embed_dim"])}
    text_config = {
        "vocab_size": int(text["vocab_size"]), "hidden_size": t_width,
        "intermediate_size": int(t_width * float(text.get("mlp_ratio", 4.0))),
        "num_hidden_layers": int(text["layers"]), "num_attention_heads": int(text["heads"]),
        "max_position_embeddings": int(text["context_length"]), "hidden_act": act, "layer_norm_eps": 1e-5,
        "projection_dim": int(cfg["embed_dim"]),
        # CLIP's BPE ids (lib_clipcap.clip_bpe); pooling never reads them (TransformersClip.encode_text pools at
        # the highest id, as open_clip's "argmax"), they only keep the config's ids inside the vocabulary
        "pad_token_id": 0, "bos_token_id": min(49406, int(text["vocab_size"]) - 1),
        "eos_token_id": min(49407, int(text["vocab_size"]) - 1)}
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=int(cfg["embed_dim"]),
                      logit_scale_init_value=math.log(1 / 0.07))


# ------------------------------------------------------------------------------------------------ weight layout
_TOP_MAP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "visual_projection.weight",  # transposed
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "text_projection.weight",  # transposed
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj", "text_projection"}
_BLOCK_MAP = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2.",
              "attn.out_proj.": "self_attn.out_proj."}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)$")
_QKV = ("q_proj", "k_proj", "v_proj")


def hf_state_dict_from_open_clip(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and reshape) open_clip CLIP weights to transformers' ``CLIPModel`` layout.

    The fused attention ``in_proj`` is split into ``q/k/v_proj``, ``c_fc/c_proj`` become ``fc1/fc2``, ``ln_pre``
    ``pre_layrnorm`` (transformers' spelling), the projections ``proj`` / ``text_projection`` (``x @ P``) become
    ``Linear`` weights (transposed). Partial dicts convert too (a fine-tuned text tower).

    Returns:
        ``(converted, unknown)``: the renamed tensors, and the keys of ``sd`` that have no counterpart.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key.startswith("text."):  # open_clip's custom_text models keep the text tower under "text."
            key = key[len("text."):]
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = value.t().contiguous() if key in _TRANSPOSED else value
            continue
        m = _BLOCK.match(key)
        if m is None:
            unknown.append(key)
            continue
        prefix = f"{'vision' if m.group(1) else 'text'}_model.encoder.layers.{m.group(2)}."
        rest = m.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            for name, part in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{prefix}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        for old, new in _BLOCK_MAP.items():
            if rest.startswith(old):
                out[prefix + new + rest[len(old):]] = value
                break
        else:
            unknown.append(key)
    return out, unknown


def open_clip_state_dict_from_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_state_dict_from_open_clip` (q/k/v fused again); keys it does not know are kept."""
    top = {v: k for k, v in _TOP_MAP.items()}
    block = {v: k for k, v in _BLOCK_MAP.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value.t().contiguous() if top[key] in _TRANSPOSED else value
            continue
        m = _HF_BLOCK.match(key)
        if m is None:
            out[key] = value
            continue
        prefix = f"{'visual.' if m.group(1) == 'vision' else ''}transformer.resblocks.{m.group(2)}."
        rest = m.group(3)
        parts = rest.split(".")
        if len(parts) == 3 and parts[0] == "self_attn" and parts[1] in _QKV:
            qkv.setdefault((prefix, parts[2]), {})[parts[1]] = value
            continue
        for new, old in block.items():
            if rest.startswith(new):
                out[prefix + old + rest[len(new):]] = value
                break
        else:
            out[key] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != set(_QKV):
            raise IncompatibleCheckpointError(f"{prefix}: attention has only {sorted(parts)} of q/k/v_proj.{kind}")
        out[f"{prefix}attn.in_proj_{kind}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    return out


def _is_hf_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("vision_model.", "text_model.")) for k in sd)


def load_weights_into(clip_model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Load open_clip-layout (or transformers-layout) weights into a transformers ``CLIPModel``, strictly.

    ``position_ids`` buffers are the model's own (a persistent buffer in transformers 4.30, gone later; HF files
    carry them or not), everything else must match key for key and shape for shape.

    Raises:
        IncompatibleCheckpointError: a missing, unexpected or misshapen tensor, naming ``source``.
    """
    if _is_hf_layout(sd):
        converted, unknown = {k: v for k, v in sd.items() if not k.endswith("position_ids")}, []
    else:
        converted, unknown = hf_state_dict_from_open_clip(sd)
    own = clip_model.state_dict()
    expected = {k for k in own if not k.endswith("position_ids")}
    missing = sorted(expected - set(converted))
    unexpected = sorted(unknown + [k for k in converted if k not in expected])
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            return f"{keys[:5]}{'...' if len(keys) > 5 else ''}"

        raise IncompatibleCheckpointError(
            f"CLIP weights {source} do not fit this CLIP config: missing {few(missing)}, unexpected {few(unexpected)}")
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in converted.items() if v.shape != own[k].shape]
    if bad:
        raise IncompatibleCheckpointError(f"CLIP weights {source} do not fit this CLIP config: {'; '.join(bad[:3])}")
    full = {k: v for k, v in own.items() if k.endswith("position_ids")}
    full.update({k: v.to(own[k].dtype) for k, v in converted.items()})
    clip_model.load_state_dict(full, strict=True)


# ------------------------------------------------------------------------------------------------------- model
class _VisionTower(nn.Module):
    """transformers' vision transformer and projection under one name, ``visual``, as open_clip's model has it
    (code that drops or skips the image tower, e.g. the grammar head's text-only copy, reads that name)."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, image_size: int) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.image_size = (image_size, image_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixels).pooler_output)


class TransformersClip(nn.Module):
    """transformers' CLIP towers with open_clip's face: ``encode_image``, ``encode_text``, ``visual``,
    ``context_length``, ``logit_scale``.

    Args:
        clip_model: a transformers ``CLIPModel``; its parts are adopted (not copied).
        context_length: the text context (token rows of this length).
    """

    def __init__(self, clip_model: nn.Module, context_length: int) -> None:
        super().__init__()
        self.visual = _VisionTower(clip_model.vision_model, clip_model.visual_projection,
                                   int(clip_model.config.vision_config.image_size))
        self.text_model = clip_model.text_model
        self.text_projection = clip_model.text_projection
        self.logit_scale = clip_model.logit_scale
        self.context_length = int(context_length)
        self.embed_dim = int(clip_model.config.projection_dim)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``[batch, 3, H, W]`` normalised pixels -> ``[batch, embed_dim]`` (open_clip's ``encode_image``)."""
        feats = self.visual(image)
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``[batch, context]`` token ids -> ``[batch, embed_dim]`` (open_clip's ``encode_text``).

        Pools at the highest token id (the end-of-text token), as open_clip's ``pool_type="argmax"``; transformers'
        own pooler changed with its versions (argmax, then the first ``eos_token_id``), so it is not used.
        """
        hidden = self.text_model(input_ids=text).last_hidden_state
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), text.argmax(dim=-1)]
        feats = self.text_projection(pooled)
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> tuple:
        return (None if image is None else self.encode_image(image, normalize=True),
                None if text is None else self.encode_text(text, normalize=True), self.logit_scale.exp())

    # Weights of this module's own parameter names <-> open_clip's names, for files that must read alike under
    # either backbone (a grammar head's fine-tuned text tower is saved in open_clip's layout).
    @staticmethod
    def state_dict_from_open_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """open_clip-layout tensors (a whole CLIP or a part) -> this module's parameter names."""
        hf, unknown = hf_state_dict_from_open_clip(sd)
        if unknown:
            raise IncompatibleCheckpointError(f"tensors {unknown[:3]} have no transformers CLIP counterpart")
        return {_own_name(k): v for k, v in hf.items()}

    @staticmethod
    def state_dict_to_open_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This module's tensors (all or some) -> open_clip's names and shapes."""
        return open_clip_state_dict_from_hf({_hf_name(k): v for k, v in sd.items()})


def _own_name(hf_key: str) -> str:
    return f"visual.{hf_key}" if hf_key.startswith(("vision_model.", "visual_projection.")) else hf_key


def _hf_name(own_key: str) -> str:
    return own_key[len("visual."):] if own_key.startswith("visual.") else own_key


# ------------------------------------------------------------------------------------------------ preprocessing
class _ToRGB:
    """``PIL.Image.convert("RGB")`` (open_clip's ``_convert_to_rgb`` / ``MaybeConvertMode``); a class, so the
    transform pickles for the batch loader's worker processes."""

    def __call__(self, image: Any) -> Any:
        return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image

    def __repr__(self) -> str:
        return "ToRGB()"


def image_preprocess(image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                     std: Sequence[float] = OPENAI_STD) -> Callable[[Any], torch.Tensor]:
    """open_clip's eval transform: shortest side to ``image_size`` (bicubic), centre crop, RGB, tensor, normalise."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      _ToRGB(), T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


# ------------------------------------------------------------------------------------------------ pretrained tags
#: Where open_clip itself fetches the ``openai`` weights of these models (``open_clip/pretrained.py``: ``hf_hub``):
#: timm's Hub copies in open_clip's layout, so the same bytes serve both backbones.
OPENAI_HUB_REPOS: dict[str, str] = {
    "ViT-B-32": "timm/vit_base_patch32_clip_224.openai",
    "ViT-B-16": "timm/vit_base_patch16_clip_224.openai",
    "ViT-L-14": "timm/vit_large_patch14_clip_224.openai",
    "ViT-L-14-336": "timm/vit_large_patch14_clip_336.openai",
}
#: The weight files of those repositories, in the order open_clip tries them (safetensors first: no pickle).
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def fetch_pretrained(name: str, tag: str, cache_dir: str | Path | None, *, why: str = "") -> Path:
    """The local file of open_clip pretrained ``tag`` for model ``name``: found in, or downloaded into,
    ``<cache_dir>/<repo>/`` (the models folder's ``clip/`` for captioners) with the project's hub rules (offline
    mode, an unreachable hub and failed downloads are a :class:`MissingFileError` that names the URL and the folder).

    Only the ``openai`` tag of :data:`OPENAI_HUB_REPOS` is known here (what the registry's models use); open_clip's
    other tags need open_clip's own table.

    Raises:
        MissingFileError: an unknown tag, or the file is absent and cannot be downloaded.
    """
    from .hub import hub_folder, resolve_hub_files

    base = name[: -len("-quickgelu")] if name.endswith("-quickgelu") else name
    repo = OPENAI_HUB_REPOS.get(base) if tag == "openai" else None
    if repo is None:
        reason = f" ({why})" if why else ""
        known = ", ".join(f"{m}/openai" for m in OPENAI_HUB_REPOS)
        raise MissingFileError(
            f"CLIP weights {name}/{tag}: the transformers CLIP backbone{reason} downloads only {known}. Pass a local "
            f"weights file as clip_pretrained (open_clip's open_clip_pytorch_model.bin or .safetensors for {name}, "
            f"or a transformers CLIPModel file)")
    folder = Path(cache_dir).expanduser() if cache_dir else None
    here = hub_folder(repo, folder)
    for filename in HUB_WEIGHT_FILES:  # one already here (or copied in by hand) wins, without any network
        if (here / filename).is_file():
            return here / filename
    first: MissingFileError | None = None
    for filename in HUB_WEIGHT_FILES:
        try:
            return resolve_hub_files(repo, [filename], models_dir=folder) / filename
        except MissingFileError as e:  # e.g. a repository without the safetensors copy: try the next file
            first = first or e
    assert first is not None
    raise first


# ---------------------------------------------------------------------------------------------------- backbone
class TransformersClipBackbone(BackboneBase):
    """The transformers CLIP in eval mode with open_clip's preprocessing and tokens: the interface of
    :class:`lib_clipcap.clip.ClipBackbone`, its ``model`` a :class:`TransformersClip` (open_clip's ``encode_image`` /
    ``encode_text`` / ``visual``), so encoding, moving and preprocessing are the shared base class's; only loading and
    ``embed_dim`` differ."""

    backend = "transformers"

    @classmethod
    def load(cls, model: str, pretrained: str | None, *, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None,
             why: str = "") -> TransformersClipBackbone:
        """Create the backbone (same arguments as :meth:`lib_clipcap.clip.ClipBackbone.load`).

        Args:
            model: open_clip model name (:data:`OPEN_CLIP_CONFIGS`) or path to an open_clip model-config JSON.
            pretrained: a local weights file (open_clip's or transformers' layout), the tag ``openai`` of a model in
                :data:`OPENAI_HUB_REPOS` (downloaded as open_clip does, :func:`fetch_pretrained`), or None for
                random weights.
            device, dtype: where and in which precision to run.
            cache_dir: where a tag's weights are downloaded to (default: the models folder's hub layout).
            why: why this backbone serves (said in errors), e.g. "open-clip-torch 1.3.0 is older than 2.20".

        Raises:
            MissingFileError: the weights file is missing, or ``pretrained`` is a tag that cannot be had.
            ClipCapError: the model is unknown, or its towers need open_clip.
            IncompatibleCheckpointError: the weights do not fit the config.
        """
        from .checkpoint import read_state_dict

        name, cfg = open_clip_model_config(str(model))
        check_supported(cfg, name)
        local = None
        if pretrained:
            local = Path(pretrained).expanduser()
            if local.suffix not in WEIGHT_SUFFIXES and "/" not in pretrained and "\\" not in pretrained:
                local = fetch_pretrained(name, pretrained, cache_dir, why=why)
                if pretrained == "openai":
                    cfg["quick_gelu"] = True  # as open_clip builds OpenAI's weights (they were trained with QuickGELU)
            if not local.is_file():
                raise MissingFileError(f"CLIP weights file not found: {local}")
        hf_model = _new_clip_model(hf_clip_config(cfg))
        if local is not None:
            load_weights_into(hf_model, read_state_dict(local), str(local))
        context = int({**_TEXT_DEFAULT, **cfg["text_cfg"]}["context_length"])
        wrapped = TransformersClip(hf_model, context).to(device=device, dtype=dtype)
        pre = dict(cfg.get("preprocess_cfg") or {})
        vision = cfg["vision_cfg"]
        preprocess = image_preprocess(_image_size(cfg), pre.get("mean", vision.get("image_mean", OPENAI_MEAN)),
                                      pre.get("std", vision.get("image_std", OPENAI_STD)))
        return cls(wrapped, preprocess, ClipBpeTokenizer(context), name=name, pretrained=str(pretrained))

    @property
    def embed_dim(self) -> int:
        """Size of the image/text features (512 for ViT-B/32, 768 for ViT-L/14)."""
        return self.model.embed_dim


def _new_clip_model(config: Any) -> nn.Module:
    """A randomly initialised float32 ``CLIPModel`` (its weights are replaced when a file is given). The attention
    implementation is transformers' default (eager in 4.30, SDPA later): both equal open_clip's
    ``nn.MultiheadAttention`` to float rounding."""
    from transformers import CLIPModel

    return CLIPModel(config).float()
