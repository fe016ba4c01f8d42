"""Images in, captions out: the CLIP backbone, the ClipCap model, its tokenizer and the decoder, held together.

``Captioner`` is the library's main entry point::

    cap = Captioner.from_pretrained("flickr8k")             # registry name, downloaded into the models folder
    cap = Captioner.from_checkpoint("my.pt", clip_model="ViT-B-32", clip_pretrained="openai")
    results = cap.caption(["a.jpg", "b.png"], decoding="beam", beam_size=5)
    print(results[0].text, results[0].candidates)

One model call runs at a time per captioner (a lock), so a server can share one instance between threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from .devices import device_and_dtype, is_int8
from .errors import ClipCapError, IncompatibleCheckpointError
from .options_table import get_option
from .results import Candidate, CaptionResult, caption_in_batches
from .scoring import DEFAULT_GRAMMAR_WEIGHT

__all__ = ["BUNDLED_GPT2_TOKENIZER", "Candidate", "CaptionResult", "Captioner", "ban_token_ids", "caption_in_batches",
           "check_feature_size", "registry_clip", "resolve_tokenizer"]  # Candidate/CaptionResult: lib_clipcap.results

log = logging.getLogger(__name__)

#: Re-ranking when none is asked for: the options table's, as every face's.
_RERANK = get_option("rerank").default


#: GPT-2's BPE files (vocab.json + merges.txt, 1.5 MB), shipped so a GPT-2 checkpoint loads offline (see LICENSE.md).
BUNDLED_GPT2_TOKENIZER = "bundled:assets/gpt2_tokenizer"


def resolve_tokenizer(spec: str | None, *, models_dir: Path | None = None):
    """A :class:`~lib_clipcap.tokenizer.Tokenizer` from ``"gpt2"``, a path, or ``bundled:...``.

    GPT-2's tokenizer files ship with the package (every GPT-2 size shares them), so a checkpoint downloaded by hand
    works without network access. Only if that copy was removed from the installation are they downloaded into the
    models folder.

    Raises:
        MissingFileError: The tokenizer files are neither bundled, nor in the models folder, nor downloadable; the
            message says which files to download and where to put them.
        UnknownModelError: ``spec`` is neither a path nor a known GPT-2 base.
    """
    from . import hub
    from .registry import package_path
    from .tokenizer import Tokenizer

    spec = spec or "gpt2"
    if spec.startswith("bundled:") or Path(spec).expanduser().exists():
        return Tokenizer.from_path(hub.resolve_local_or_hub(spec, models_dir=models_dir))
    from .registry import gpt2_base

    base = gpt2_base(spec)
    bundled = package_path(BUNDLED_GPT2_TOKENIZER)
    if base["tokenizer_files"] == ["vocab.json", "merges.txt"] and all(
            (bundled / f).is_file() for f in base["tokenizer_files"]):
        return Tokenizer.from_path(bundled)
    folder = hub.resolve_hub_files(base["repo"], list(base["tokenizer_files"]), models_dir=models_dir)
    return Tokenizer.from_path(folder)


def registry_clip(entry) -> tuple[str, str | None]:
    """``(clip_model, clip_pretrained)`` of a registry entry, with bundled CLIP configs and weights as local paths."""
    from . import registry

    pretrained = entry.clip.pretrained
    if pretrained and pretrained.startswith(registry.BUNDLED_PREFIX):
        pretrained = str(registry.package_path(pretrained))
    clip_model = entry.clip.model
    bundled_cfg = registry.package_path(f"bundled:assets/clip_configs/{clip_model}.json")
    if bundled_cfg.is_file():
        clip_model = str(bundled_cfg)
    return clip_model, pretrained


def ban_token_ids(tokenizer, words: Iterable[str]) -> tuple[tuple[int, ...], ...]:
    """Token sequences of each word as it may appear (with/without a leading space, as given/lower/capitalised)."""
    seqs: set[tuple[int, ...]] = set()
    for w in words:
        w = w.strip()
        if not w:
            continue
        for form in {w, w.lower(), w.capitalize()}:
            for text in (form, " " + form):
                ids = tuple(tokenizer.encode(text))
                if ids:
                    seqs.add(ids)
    return tuple(sorted(seqs))


def check_feature_size(clip, prefix_size: int, what: str) -> None:
    """Refuse a CLIP backbone whose feature size differs from what the checkpoint's mapper expects."""
    if clip is not None and clip.embed_dim != prefix_size:
        hint = {512: "ViT-B-32", 640: "RN50x4", 768: "ViT-L-14"}.get(prefix_size, "the one on its model card")
        raise IncompatibleCheckpointError(
            f"{what} expects {prefix_size}-d CLIP features, but CLIP {clip.name!r} gives {clip.embed_dim}-d "
            f"features; use the backbone it was trained with ({hint})"
        )


class Captioner:
    """A ClipCap captioner: CLIP backbone + mapper + GPT-2 + tokenizer."""

    def __init__(self, clip, model, tokenizer, *, name: str = "") -> None:
        self.clip = clip
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        # The grammar head for rerank="clip+grammar" (a lib_clipcap.grammar.GrammarScorer): set by attach_grammar or
        # loaded on first use; part of the captioner's state, so to() moves it, unload() frees it and the WebUI's
        # memory managers see its weights.
        self.grammar = None
        self.grammar_weight = DEFAULT_GRAMMAR_WEIGHT
        self._lock = threading.RLock()
        cfg = model.config
        check_feature_size(clip, cfg.prefix_size, name or "the checkpoint")
        if tokenizer.vocab_size > cfg.gpt2.vocab_size:
            raise IncompatibleCheckpointError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's GPT-2 has {cfg.gpt2.vocab_size}; "
                f"use the tokenizer the checkpoint was trained with"
            )
        stop = tokenizer.token_id(cfg.stop_token) if cfg.stop_token else None
        self.stop_ids = sorted({tokenizer.eos_token_id} | ({stop} if stop is not None else set()))

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name: str, *, models_dir: str | Path | None = None, device=None, dtype=None,
                        download: bool = True) -> Captioner:
        """Load a registry model (see :func:`lib_clipcap.list_models`), downloading what is missing.

        Raises:
            UnknownModelError: ``name`` is not in the registry (the message lists the known names).
            MissingFileError: a file is missing and cannot be downloaded (offline); the message says where to put it.
        """
        from . import hub, registry

        entry = registry.get_model(name)
        if entry.kind != "clipcap":
            raise ClipCapError(f"{entry.name!r} is a {entry.kind} model; load it with the matching class")
        models_dir = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
        ckpt = hub.resolve_model_file(entry, models_dir=models_dir, download=download)
        clip_model, pretrained = registry_clip(entry)
        cap = cls.from_checkpoint(
            ckpt, clip_model=clip_model, clip_pretrained=pretrained, tokenizer=entry.tokenizer, gpt2=entry.gpt2,
            normalize=entry.normalize, device=device, dtype=dtype, models_dir=models_dir,
        )
        cap.name = entry.name
        return cap

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, clip_model: str, clip_pretrained: str | None,
                        tokenizer: str | None = None, gpt2: str | None = None, normalize: bool | None = None,
                        device=None, dtype=None, models_dir: str | Path | None = None) -> Captioner:
        """Load a local checkpoint in any supported layout.

        Args:
            path: ``.pt``/``.pth``/``.bin``/``.safetensors`` checkpoint.
            clip_model: open_clip model name or model-config JSON path.
            clip_pretrained: open_clip pretrained tag, or a local CLIP weights file.
            tokenizer: ``"gpt2"`` (default), a tokenizer folder/file, or ``bundled:...``.
            gpt2: GPT-2 base for checkpoints without GPT-2 weights (``"gpt2"`` or an HF-format folder).
            normalize: L2-normalise CLIP features before the mapper (default: the saved config, else False).
            device, dtype: default CUDA/fp16 when available, else CPU/fp32. ``dtype="int8"`` (CPU only): GPT-2's
                weights in int8, about 4x less memory traffic per token, for faster one-image captions on a CPU
                (CLIP and the mapper stay fp32; see :mod:`lib_clipcap.quant`).

        Raises:
            MissingFileError, CheckpointError, IncompatibleCheckpointError.
        """
        from . import hub
        from .checkpoint import build_model, infer_config, load_config, load_gpt2_weights
        from .clip import ClipBackbone

        models_dir = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
        dev, dt = device_and_dtype(device, dtype)
        overrides = {"normalize": normalize, "clip_model": clip_model, "clip_pretrained": clip_pretrained,
                     "tokenizer": tokenizer, "gpt2_base": gpt2}
        config, sd = load_config(path, overrides=overrides)
        gpt_weights = None
        if not config.has_gpt_weights:
            folder = hub.resolve_local_or_hub(config.gpt2_base, models_dir=models_dir)
            gpt_weights, gcfg = load_gpt2_weights(folder)
            config = infer_config(sd, base=config.replace(gpt2=gcfg))  # re-check the mapper against the real base
        clip = ClipBackbone.load(clip_model, clip_pretrained, device=dev, dtype=dt, cache_dir=models_dir / "clip")
        check_feature_size(clip, config.prefix_size, Path(path).name)  # before building the (large) model
        model = build_model(config, sd, gpt2_weights=gpt_weights).to(device=dev, dtype=dt)
        if is_int8(dtype):
            from .quant import quantize_gpt2_

            quantize_gpt2_(model.gpt)
        tok = resolve_tokenizer(config.tokenizer, models_dir=models_dir)
        return cls(clip, model, tok, name=Path(path).stem)

    # ------------------------------------------------------------------------------------------------- inference
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return self.model.config

    def decoding_options(self, **settings: Any):
        """Checked :class:`~lib_clipcap.decoding.DecodingOptions` for the decoding ``settings`` (names,
        checks and defaults: :func:`lib_clipcap.options_table.resolve_decoding`, as :meth:`caption`), with
        ``banned_words`` tokenised by this captioner's tokenizer.

        Raises:
            DecodingError: an unknown setting (the message lists the valid ones) or a bad value.
        """
        from .decoding import DecodingOptions
        from .options_table import resolve_decoding

        resolved = resolve_decoding(settings)
        return DecodingOptions.from_settings(resolved, banned_token_ids=self.ban_ids(resolved["banned_words"]))

    def ban_ids(self, words: Iterable[str]) -> tuple[tuple[int, ...], ...]:
        """Token sequences for each word as it may appear (with/without a leading space, lower/capitalised)."""
        return ban_token_ids(self.tokenizer, words)

    def caption(self, images: Sequence | Any, *, batch_size: int = 16, rerank: str = _RERANK,
                **settings: Any) -> list[CaptionResult]:
        """Caption images.

        The decoding defaults are :mod:`lib_clipcap.options_table`'s, the same as the WebUI settings, the Caption
        tab, the HTTP API and ``python -m lib_clipcap caption`` (beam search, 5 beams, 3 candidates, 40 tokens).
        Pass ``decoding="greedy"`` for the fastest single caption (``num_candidates`` not given is then 1).

        Args:
            images: PIL images, paths, bytes or arrays (one, or a list). A bad input yields a result with ``error``
                set; the others are captioned normally.
            batch_size: images per model call.
            settings: the decoding settings by the options table's names, each documented there
                (:func:`lib_clipcap.options_table.decoding_keys`): ``decoding="greedy"|"beam"|"sample"``,
                ``beam_size``, ``num_candidates``, ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``,
                ``banned_words``... Not given (or ``None``): the table's default.
            rerank: ``"none"`` (decoder order), ``"clip"`` (candidates ordered by CLIP-S) or ``"clip+grammar"``
                (CLIP-S + ``grammar_weight`` x the grammar head's probability; see :mod:`lib_clipcap.scoring`). Ask
                for several candidates (beam or sample) to give it a choice.

        Returns:
            One :class:`CaptionResult` per input, in order.

        Raises:
            DecodingError: invalid decoding options (before any work is done).
        """
        opts = self.decoding_options(**settings)
        def caption_batch(imgs: list, start: int) -> list[CaptionResult]:
            # Each batch draws its own samples: the seed is offset by the batch's position (as SBG does), so equal
            # images in different batches do not get the same "random" captions, and a call stays reproducible.
            batch_opts = opts if opts.seed is None else opts.replace(seed=opts.seed + start)
            return self.caption_pixels(self.clip.preprocess_images(imgs), batch_opts, rerank=rerank)

        return caption_in_batches(images, batch_size, caption_batch)

    def caption_pixels(self, pixels: torch.Tensor, options, *, rerank: str = "none") -> list[CaptionResult]:
        """Caption preprocessed pixels ``[batch, 3, H, W]`` (from ``clip.preprocess``) with ``options``."""
        with self._lock:
            feats = self.clip.encode_images(pixels)
            return self.caption_features(feats, options, rerank=rerank)

    def caption_features(self, features: torch.Tensor, options, *, rerank: str = "none") -> list[CaptionResult]:
        """Caption CLIP image features ``[batch, prefix_size]`` (unnormalised; the model normalises if it must)."""
        from .decoding import decode
        from .scoring import check_rerank_mode, rerank_results

        rerank = check_rerank_mode(rerank)
        with self._lock, torch.inference_mode():
            prefix = self.model.prefix_embeddings(features.to(self.device))
            hyps = decode(self.model.gpt, prefix, options, stop_ids=self.stop_ids,
                          pad_id=self.tokenizer.eos_token_id)
        out = []
        for cands in hyps:
            cs = [Candidate(self.tokenizer.decode(h.tokens).strip(), h.score) for h in cands]
            out.append(CaptionResult(text=cs[0].text, score=cs[0].score, candidates=cs))
        if rerank != "none":  # fills clip_score/grammar and puts the best candidate first
            with self._lock:
                rerank_results(out, features, self.clip, mode=rerank, owner=self)
        return out

    # -------------------------------------------------------------------------------------------------- memory
    @property
    def quantized(self) -> bool:
        """GPT-2's weights are int8 (loaded with ``dtype="int8"``): the captioner stays on the CPU."""
        from .quant import Int8Linear

        return self.model is not None and any(isinstance(m, Int8Linear) for m in self.model.gpt.modules())

    def to(self, device=None, dtype=None) -> Captioner:
        """Move the whole captioner (CLIP and ClipCap) to ``device`` / ``dtype``.

        Raises:
            ClipCapError: an int8 captioner asked to leave the CPU or fp32 (reload it with another dtype instead).
        """
        if self.quantized and ((device is not None and torch.device(device).type != "cpu")
                               or (dtype is not None and dtype != torch.float32)):
            raise ClipCapError(f"{self.name or 'this captioner'} has int8 weights, which run on the CPU in fp32 only; "
                               f"load it with dtype fp16/fp32 to use {device or dtype}")
        with self._lock:
            self.model.to(device=device, dtype=dtype)
            self.clip.to(device=device, dtype=dtype)
            if self.grammar is not None:
                self.grammar.to(device=device, dtype=dtype)
        return self

    def unload(self) -> None:
        """Free the weights (the captioner cannot be used afterwards) and release cached GPU memory."""
        with self._lock:
            on_cuda = self.device.type == "cuda"
            self.model = None  # type: ignore[assignment]
            self.clip = None
            self.grammar = None
            if on_cuda:
                torch.cuda.empty_cache()

    def __repr__(self) -> str:
        if self.model is None:
            return f"Captioner({self.name!r}, unloaded)"
        c = self.model.config
        return (f"Captioner({self.name!r}, {c.mapping} prefix {c.prefix_length}, CLIP {self.clip.name}, "
                f"device={self.device})")
