"""Reading, inspecting and converting ClipCap checkpoints in every published layout.

Layouts handled (the architecture is read from tensor names and shapes, never from the file name):

- original MLP ClipCap (``clip_project.model.0/2.*`` + full ``gpt.*``): COCO, Conceptual Captions, Anshler's
  Flickr8k/30k files;
- the transformer mapper (``clip_project.linear``, ``clip_project.prefix_const``,
  ``clip_project.transformer.layers.N.*``), with or without GPT-2 weights (prefix-only training);
- our ``.safetensors`` files, whose :class:`~lib_clipcap.model.ClipCapConfig` travels in the file's metadata and in
  a ``<name>.json`` beside it.

``.pt`` files are read with ``torch.load(weights_only=True)``: a checkpoint can never run code on the user's machine.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, MissingFileError
from .gpt2 import GPT2Config, GPT2LMHead
from .model import ClipCapConfig, ClipCapModel

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "clipcap_config"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a torch file, without executing pickled code.

    Wrappers such as ``{"state_dict": ...}`` and DDP's ``module.`` prefixes are removed.

    Raises:
        MissingFileError: ``path`` does not exist.
        CheckpointError: the file is not a readable checkpoint, or needs code execution to unpickle.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except Exception as e:  # safetensors raises its own SafetensorError for corrupt headers
            raise CheckpointError(f"{p} is not a valid safetensors file: {e}") from e
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling errors come in many types
            raise CheckpointError(
                f"cannot read {p} safely: {str(e).splitlines()[0][:300]}. Checkpoints are loaded with "
                f"weights_only=True so they cannot run code; if you trust this file, convert it with a tool you "
                f"trust to .safetensors"
            ) from e
        sd = obj
        for _ in range(2):
            if isinstance(sd, dict):
                key = next((k for k in _WRAPPER_KEYS if isinstance(sd.get(k), dict)), None)
                if key is not None and not any(torch.is_tensor(v) for v in sd.values()):
                    sd = sd[key]
        if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
            raise CheckpointError(f"{p} holds no state_dict of tensors (got {type(obj).__name__})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def read_saved_config(path: str | Path) -> dict[str, Any] | None:
    """The ClipCap config stored with a checkpoint (safetensors metadata or ``<stem>.json``), if any."""
    p = Path(path).expanduser()
    if p.suffix == ".safetensors" and p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # the full read reports a corrupt file with a better message
            meta = {}
        if CONFIG_METADATA_KEY in meta:
            return _resolve_relative_paths(json.loads(meta[CONFIG_METADATA_KEY]), p.parent)
    side = p.with_suffix(".json")
    if side.is_file():
        try:
            return _resolve_relative_paths(json.loads(side.read_text(encoding="utf-8")), p.parent)
        except ValueError as e:
            raise CheckpointError(f"config {side} is not valid JSON: {e}") from e
    return None


# Config fields that may name a file or folder. A path near the checkpoint is saved relative to the checkpoint's
# folder ("./tokenizer.json", "../tokenizer.json"), so a trained model folder can be moved or shared; absolute paths
# and names ("gpt2", "bundled:...") are kept as they are.
_PATH_FIELDS = ("tokenizer", "gpt2_base")


def _resolve_relative_paths(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Saved ``./``/``../`` paths made absolute against the checkpoint's folder."""
    for key in _PATH_FIELDS:
        v = config.get(key)
        if isinstance(v, str) and v.startswith(("./", "../")):
            config[key] = str((folder / v).resolve())
    return config


def _relative_paths(config: ClipCapConfig, folder: Path) -> ClipCapConfig:
    """Absolute paths to existing files in ``folder``, or beside it (one level up), made relative to ``folder``."""
    import os

    changes = {}
    for key in _PATH_FIELDS:
        v = getattr(config, key, None)
        if not (isinstance(v, str) and os.path.isabs(v) and Path(v).exists()):
            continue
        try:
            rel = Path(os.path.relpath(Path(v).resolve(), folder.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            continue
        if not rel.startswith("../.."):
            changes[key] = rel if rel.startswith("../") else "./" + rel
    return config.replace(**changes) if changes else config


def _layer_count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _gpt_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("gpt.") :]: v for k, v in sd.items() if k.startswith("gpt.")}


def infer_gpt2_config(gpt_sd: dict[str, torch.Tensor], *, n_head: int | None = None) -> GPT2Config:
    """GPT-2 shape from its weights. Head count is not visible in weights; GPT-2 uses 64-wide heads."""
    gpt_sd = normalize_gpt2_keys(gpt_sd)
    wte = gpt_sd["transformer.wte.weight"]
    n_embd = int(wte.shape[1])
    return GPT2Config(
        vocab_size=int(wte.shape[0]),
        n_positions=int(gpt_sd["transformer.wpe.weight"].shape[0]),
        n_embd=n_embd,
        n_layer=_layer_count(gpt_sd, r"transformer\.h\.(\d+)\."),
        n_head=n_head or max(1, n_embd // 64),
        eos_token_id=int(wte.shape[0]) - 1,
    )


def normalize_gpt2_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the key styles of GPT-2 files (``h.0...`` in HF's ``model.safetensors``) onto ``transformer.h.0...``."""
    out = {}
    for k, v in sd.items():
        if not (k.startswith("transformer.") or k.startswith("lm_head.")):
            k = "transformer." + k
        out[k] = v
    return out


def infer_config(sd: dict[str, torch.Tensor], *, base: ClipCapConfig | None = None) -> ClipCapConfig:
    """Infer the ClipCap architecture from a state dict.

    Args:
        sd: the checkpoint's tensors.
        base: values the weights cannot show (heads, normalisation, CLIP backbone, GPT-2 base...). Shapes found in
            the weights always win over it.

    Raises:
        CheckpointError: the tensors do not form a ClipCap model.
    """
    base = base or ClipCapConfig()
    gpt_sd = _gpt_keys(sd)
    has_gpt = "transformer.wte.weight" in normalize_gpt2_keys(gpt_sd) if gpt_sd else False
    gpt2 = base.gpt2
    if has_gpt:
        gpt2 = infer_gpt2_config(gpt_sd)
        if (gpt2.n_embd, gpt2.vocab_size) == (base.gpt2.n_embd, base.gpt2.vocab_size):
            # Weights cannot show the head count or EOS id: keep those of a saved config.
            gpt2 = GPT2Config(**{**gpt2.to_dict(), "n_head": base.gpt2.n_head, "eos_token_id": base.gpt2.eos_token_id})
    n_embd = gpt2.n_embd
    if "clip_project.prefix_const" in sd and "clip_project.linear.weight" in sd:
        lin = sd["clip_project.linear.weight"]
        const = sd["clip_project.prefix_const"]
        if not has_gpt and base.gpt2 == GPT2Config():
            # No GPT-2 in the file and no base loaded yet: the mapper's width tells GPT-2's width. The caller
            # re-checks against the real base GPT-2 once it is loaded (see Captioner.from_checkpoint).
            n_embd = int(const.shape[1])
            gpt2 = GPT2Config(**{**gpt2.to_dict(), "n_embd": n_embd})
        if const.shape[1] != n_embd:
            raise CheckpointError(
                f"transformer mapper width {const.shape[1]} does not match GPT-2 width {n_embd}; "
                f"the checkpoint's GPT-2 base is not {base.gpt2_base!r}?"
            )
        layers = _layer_count(sd, r"clip_project\.transformer\.layers\.(\d+)\.")
        fc1 = sd.get("clip_project.transformer.layers.0.mlp.fc1.weight")
        return base.replace(
            mapping="transformer",
            prefix_length=int(const.shape[0]),
            prefix_size=int(lin.shape[1]),
            clip_length=int(lin.shape[0]) // n_embd,
            mapper_layers=layers,
            mapper_mlp_ratio=(int(fc1.shape[0]) / n_embd) if fc1 is not None else base.mapper_mlp_ratio,
            mlp_hidden=(),
            gpt2=gpt2,
            has_gpt_weights=has_gpt,
        )
    lin_idx = sorted(int(m.group(1)) for k in sd if (m := re.match(r"clip_project\.model\.(\d+)\.weight$", k)))
    if lin_idx:
        weights = [sd[f"clip_project.model.{i}.weight"] for i in lin_idx]
        out_dim = int(weights[-1].shape[0])
        if out_dim % n_embd:
            raise CheckpointError(
                f"MLP mapper output size {out_dim} is not a multiple of GPT-2 width {n_embd}; "
                f"is the GPT-2 base right?"
            )
        return base.replace(
            mapping="mlp",
            prefix_length=out_dim // n_embd,
            prefix_size=int(weights[0].shape[1]),
            mlp_hidden=tuple(int(w.shape[0]) for w in weights[:-1]),
            clip_length=None,
            mapper_layers=len(weights),
            gpt2=gpt2,
            has_gpt_weights=has_gpt,
        )
    sample = ", ".join(sorted(sd)[:6])
    raise CheckpointError(
        f"not a ClipCap checkpoint: no 'clip_project.model.*' (MLP mapper) or 'clip_project.linear' + "
        f"'clip_project.prefix_const' (transformer mapper) tensors; found e.g. {sample}"
    )


def normalize_by_layout(config: ClipCapConfig) -> tuple[bool, str]:
    """Whether the published code for a checkpoint of this layout L2-normalises CLIP features, and why.

    The weights cannot show it (a mapper trained on normalised features has the same shapes as one trained on raw
    ones), and getting it wrong gives fluent captions of the wrong image. So for a file with no saved config the
    choice follows the code that published each layout: the original ClipCap's transformer-mapper inference
    normalises the CLIP vector; Huynh et al.'s Flickr models (MLP on ViT-L/14's 768-d features, GPT-2 included)
    normalise; the original ClipCap MLP models for COCO and Conceptual Captions (ViT-B/32, 512-d) do not.
    """
    if config.mapping == "transformer":
        return True, "transformer mapper: the original ClipCap code normalises CLIP features for it"
    if config.prefix_size == 768:
        return True, "MLP mapper on 768-d CLIP features: Huynh et al.'s Flickr models normalise"
    return False, (f"MLP mapper on {config.prefix_size}-d CLIP features: the original ClipCap COCO and Conceptual "
                   "Captions models do not normalise")


def _decide_normalize(config: ClipCapConfig, saved: dict | None, given: bool | None) -> tuple[ClipCapConfig, str]:
    """``config`` with ``normalize`` decided, and how: given by the caller, saved with the file, or by layout."""
    if given is not None:
        return config, "given by the caller (--normalize / --no-normalize, or the model's registry entry)"
    if saved and "normalize" in saved:
        return config, "saved with the checkpoint"
    value, reason = normalize_by_layout(config)
    return config.replace(normalize=value), f"unknown from the weights; {reason}"


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> tuple[ClipCapConfig, dict]:
    """Read a checkpoint and its architecture.

    A saved config is used when present (and checked against the shapes); otherwise the architecture is inferred.
    ``overrides`` (e.g. ``normalize``, ``clip_model``) fill in what the weights cannot tell; where neither they nor
    a saved config say whether to normalise CLIP features, :func:`normalize_by_layout` decides (logged).

    Returns:
        ``(config, state_dict)``.
    """
    config, sd, how = _load_config(path, overrides)
    if how.startswith("unknown"):
        log.info("%s: normalize=%s (%s); pass normalize=... (--normalize/--no-normalize) if the model was trained "
                 "otherwise", Path(path).name, config.normalize, how)
    return config, sd


def _load_config(path: str | Path, overrides: dict[str, Any] | None) -> tuple[ClipCapConfig, dict, str]:
    sd = read_state_dict(path)
    saved = read_saved_config(path)
    base = ClipCapConfig.from_dict(saved) if saved else ClipCapConfig()
    if overrides:
        base = base.replace(**{k: v for k, v in overrides.items() if v is not None})
    config, how = _decide_normalize(infer_config(sd, base=base), saved, (overrides or {}).get("normalize"))
    return config, sd, how


def inspect_checkpoint(path: str | Path) -> ClipCapConfig:
    """The architecture of the checkpoint at ``path`` (see :meth:`ClipCapConfig.summary` for a flat dict, and
    :func:`inspect_summary` for what ``inspect`` prints).

    Raises:
        MissingFileError, CheckpointError.
    """
    return _load_config(path, None)[0]


def inspect_summary(path: str | Path) -> dict[str, Any]:
    """What ``inspect --json`` prints: :meth:`ClipCapConfig.summary`, except that ``normalize`` is ``"unknown"``
    where neither the file nor a saved config says, with ``normalize_default`` (what loading uses) and
    ``normalize_decided_by`` (why).
    """
    config, _, how = _load_config(path, None)
    summary = config.summary()
    if how.startswith("unknown"):
        summary["normalize"] = "unknown"
        summary["normalize_default"] = config.normalize
    summary["normalize_decided_by"] = how
    return summary


def build_model(config: ClipCapConfig, sd: dict[str, torch.Tensor], *, gpt2_weights: dict | None = None) -> ClipCapModel:
    """Instantiate :class:`ClipCapModel` and load ``sd`` with strict key matching.

    Args:
        config: the architecture.
        sd: checkpoint tensors.
        gpt2_weights: base GPT-2 tensors, required when the checkpoint carries none.

    Raises:
        CheckpointError: missing or unexpected tensors, or shape mismatches.
    """
    model = ClipCapModel(config)
    sd = dict(sd)
    gpt = _gpt_keys(sd)
    if not config.has_gpt_weights:
        if gpt2_weights is None:
            raise CheckpointError("the checkpoint has no GPT-2 weights and no base GPT-2 weights were given")
        gpt = gpt2_weights
    for k in [k for k in sd if k.startswith("gpt.")]:
        del sd[k]
    gpt = {k: v for k, v in normalize_gpt2_keys(gpt).items() if not k.endswith(GPT2LMHead.IGNORED_KEY_SUFFIXES)}
    gpt.setdefault("lm_head.weight", gpt.get("transformer.wte.weight"))
    full = {**sd, **{"gpt." + k: v for k, v in gpt.items()}}
    expected = set(model.state_dict())
    missing = sorted(expected - set(full))
    unexpected = sorted(set(full) - expected)
    if missing or unexpected:
        raise CheckpointError(
            "checkpoint does not match the inferred architecture "
            f"({config.mapping}, prefix {config.prefix_length}): missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint tensors have unexpected shapes: {str(e)[:500]}") from e
    return model


def load_gpt2_weights(folder: Path) -> tuple[dict[str, torch.Tensor], GPT2Config]:
    """Read an HF-format GPT-2 folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``)."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            sd = normalize_gpt2_keys(read_state_dict(folder / name))
            break
    else:
        raise MissingFileError(f"no model.safetensors or pytorch_model.bin in GPT-2 folder {folder}")
    cfg_file = folder / "config.json"
    cfg = GPT2Config.from_hf_config(json.loads(cfg_file.read_text())) if cfg_file.is_file() else infer_gpt2_config(sd)
    return sd, cfg


def _write(sd: dict[str, torch.Tensor], config: ClipCapConfig, dst: Path) -> Path:
    """Write tensors + config atomically: ``dst`` (.safetensors, config in metadata) and ``<stem>.json``."""
    from safetensors.torch import save_file

    from .fileio import atomic_replace, atomic_write_text

    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()
          if not k.endswith(GPT2LMHead.IGNORED_KEY_SUFFIXES)}
    sd.pop("gpt.lm_head.weight", None)  # tied to wte; safetensors refuses shared storage
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        dst = dst.with_suffix(".safetensors")
    dst.parent.mkdir(parents=True, exist_ok=True)
    config = _relative_paths(config, dst.parent)
    text = json.dumps(config.to_dict())
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_file(sd, str(tmp), metadata={CONFIG_METADATA_KEY: text})
    atomic_replace(tmp, dst)
    atomic_write_text(dst.with_suffix(".json"), json.dumps(config.to_dict(), indent=2) + "\n")
    return dst


def save_checkpoint(model: ClipCapModel, path: str | Path, *, include_gpt: bool | None = None) -> Path:
    """Write ``model`` as ``.safetensors`` with its config in the metadata and in ``<stem>.json`` beside it.

    Args:
        include_gpt: store GPT-2 weights (default: ``config.has_gpt_weights``). Prefix-only models can leave
            them out and rely on ``gpt2_base``.
    """
    config = model.config
    include_gpt = config.has_gpt_weights if include_gpt is None else include_gpt
    sd = {k: v for k, v in model.state_dict().items() if include_gpt or not k.startswith("gpt.")}
    return _write(sd, config.replace(has_gpt_weights=include_gpt), Path(path))


def convert_checkpoint(src: str | Path, dst: str | Path, *, overrides: dict[str, Any] | None = None) -> ClipCapConfig:
    """Convert any supported checkpoint to ``.safetensors`` + JSON config; returns the config written."""
    config, sd = load_config(src, overrides=overrides)
    _write(sd, config, Path(dst))
    return config
