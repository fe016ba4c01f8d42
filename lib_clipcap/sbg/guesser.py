"""``BlindGuesser``: images in, Selective Blind Guessing captions out.

The generator never sees the image: CLIP turns the image into keywords (:mod:`.keywords`), a GPT-2 fine-tuned on
``keywords ### caption`` writes k candidates (:mod:`.generator`), and CLIP picks the candidate closest to the image
(k = 1, 2, 5 are the paper's rows). Same shape as :class:`~lib_clipcap.captioner.Captioner`::

    sbg = BlindGuesser.from_pretrained("shapes-sbg")
    res = sbg.caption(["a.png"], top_k_candidates=5, seed=0)[0]
    print(res.text, res.keywords, [(c.text, c.clip_score) for c in res.candidates])

Per batch of images: one CLIP image pass, one matrix product against the cached text features (keywords), one
batched KV-cached generation of every candidate of every image, and one CLIP text pass over all candidates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..captioner import ban_token_ids, registry_clip
from ..devices import device_and_dtype, is_int8
from ..errors import ClipCapError
from ..results import Candidate, CaptionResult, caption_in_batches
from .defaults import DECODING_DEFAULTS, DEFAULT_MAX_KEYWORDS, DEFAULT_RERANK, DEFAULT_THRESHOLD
from .generator import SbgGenerator
from .keywords import KeywordExtractor, TextFeatureCache
from .locate import default_cache_dir, resolve_generator_folder  # noqa: F401  (re-exported: their old home)
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

class BlindGuesser:
    """Selective Blind Guessing: CLIP keywords -> GPT-2 generator -> CLIP picks the best of k candidates.

    Args:
        clip: the :class:`~lib_clipcap.clip.ClipBackbone` (keywords and candidate scoring).
        generator: the :class:`~lib_clipcap.sbg.generator.SbgGenerator`.
        extractor: the :class:`~lib_clipcap.sbg.keywords.KeywordExtractor` for ``clip`` and a vocabulary.
    """

    def __init__(self, clip, generator: SbgGenerator, extractor: KeywordExtractor, *, name: str = "") -> None:
        self.clip = clip
        self.generator = generator
        self.extractor = extractor
        self.name = name or generator.name
        self.grammar = None  # optional GrammarScorer for rerank="clip+grammar" (see lib_clipcap.scoring)
        self.grammar_weight = 1.0
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name: str, *, models_dir: str | Path | None = None, device=None, dtype=None,
                        cache_dir: str | Path | None = None) -> BlindGuesser:
        """Load a registry SBG model (``python -m lib_clipcap models`` lists them).

        Raises:
            UnknownModelError: ``name`` is not in the registry.
            ClipCapError: ``name`` is not an SBG model.
            MissingFileError: the generator is not available locally (the message says where to get it).
        """
        from .. import hub, registry

        entry = registry.get_model(name)
        if entry.kind != "sbg":
            raise ClipCapError(f"{entry.name!r} is a {entry.kind} model; load it with Captioner.from_pretrained")
        models_dir = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
        folder = resolve_generator_folder(entry, models_dir)
        clip_model, pretrained = registry_clip(entry)
        # A vocabulary.json beside the generator (e.g. the original one, imported) wins over the registry's default.
        own = folder / "vocabulary.json"
        vocabulary = str(own) if own.is_file() else (getattr(entry, "vocabulary", None) or "natural")
        guesser = cls.from_files(folder, clip_model=clip_model, clip_pretrained=pretrained, vocabulary=vocabulary,
                                 tokenizer=entry.tokenizer, device=device, dtype=dtype, models_dir=models_dir,
                                 cache_dir=cache_dir)
        guesser.name = entry.name
        return guesser

    @classmethod
    def from_files(cls, generator_dir: str | Path, *, clip_model: str, clip_pretrained: str | None,
                   vocabulary: Vocabulary | str | Path = "natural", tokenizer: str | Path | None = None,
                   device=None, dtype=None, models_dir: str | Path | None = None,
                   cache_dir: str | Path | None = None, clip=None) -> BlindGuesser:
        """Build from local files.

        Args:
            generator_dir: HF-format GPT-2 folder (``config.json`` + ``model.safetensors``).
            clip_model, clip_pretrained: the CLIP backbone (open_clip name or config JSON; tag or weights file).
            vocabulary: built-in name (``"natural"``, ``"shapes"``), a vocabulary JSON path, or a Vocabulary.
            tokenizer: the generator's tokenizer (default: the folder's own, else ``"gpt2"``).
            cache_dir: text-feature cache folder (default ``<models_dir>/cache/sbg-text-features``).
            clip: an already loaded :class:`~lib_clipcap.clip.ClipBackbone` to share (then ``clip_model`` and
                ``clip_pretrained`` are ignored).

        Raises:
            MissingFileError, IncompatibleCheckpointError, VocabularyError.
        """
        from ..clip import ClipBackbone

        dev, dt = device_and_dtype(device, dtype)
        models_dir = Path(models_dir).expanduser() if models_dir else None
        if tokenizer is not None and str(tokenizer) == "gpt2":
            own = (Path(generator_dir) / "tokenizer.json").is_file() or (Path(generator_dir) / "vocab.json").is_file()
            tokenizer = str(generator_dir) if own else "gpt2"
        generator = SbgGenerator.load(generator_dir, tokenizer=tokenizer, models_dir=models_dir, device=dev,
                                      dtype=dtype if is_int8(dtype) else dt)
        if clip is None:
            from .. import hub

            clip_cache = (models_dir or hub.default_models_dir()) / "clip"
            clip = ClipBackbone.load(clip_model, clip_pretrained, device=dev, dtype=dt, cache_dir=clip_cache)
        cache = TextFeatureCache(cache_dir if cache_dir is not None else default_cache_dir(models_dir))
        extractor = KeywordExtractor(clip, vocabulary, cache=cache)
        return cls(clip, generator, extractor, name=Path(generator_dir).name)

    # ------------------------------------------------------------------------------------------------- inference
    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def vocabulary(self) -> Vocabulary:
        return self.extractor.vocabulary

    def decoding_options(self, *, top_k_candidates: int | None = None, **settings: Any):
        """Checked :class:`~lib_clipcap.decoding.DecodingOptions` for k candidates per image.

        ``settings`` takes the options table's names (:func:`lib_clipcap.options_table.resolve_decoding`), with the
        SBG procedure's defaults (:data:`~lib_clipcap.sbg.defaults.DECODING_DEFAULTS`: 5 candidates sampled with
        top-k 50). k is ``num_candidates``, the name every captioner uses; ``top_k_candidates`` (the paper's name) is
        the same setting. Beam search keeps at least k beams.

        Raises:
            DecodingError, ClipCapError: an unknown setting, a bad value, or k and ``num_candidates`` disagreeing.
        """
        from ..decoding import DecodingOptions
        from ..options_table import resolve_decoding

        n = settings.get("num_candidates")
        if top_k_candidates is not None:
            if n is not None and n != top_k_candidates:
                raise ClipCapError(f"top_k_candidates={top_k_candidates} and num_candidates={n} disagree: they are "
                                   f"the same setting (k); give only one of them")
            settings["num_candidates"] = top_k_candidates
        resolved = resolve_decoding(settings, method_defaults=DECODING_DEFAULTS)
        k = resolved["num_candidates"]
        if resolved["decoding"] == "greedy" and k > 1:
            raise ClipCapError(f"greedy decoding gives one caption, not {k} candidates; use "
                               f"decoding='sample' (the paper) or 'beam', or top_k_candidates=1")
        resolved["beam_size"] = max(resolved["beam_size"] or k, k)
        return DecodingOptions.from_settings(resolved, banned_token_ids=self._ban_ids(resolved["banned_words"]))

    def _ban_ids(self, words: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        return ban_token_ids(self.generator.tokenizer, words)

    def caption(self, images: Sequence | Any, *, top_k_candidates: int | None = None,
                threshold: float = DEFAULT_THRESHOLD, max_keywords: int | None = DEFAULT_MAX_KEYWORDS,
                batch_size: int = 16, rerank: str = DEFAULT_RERANK, **settings: Any) -> list[CaptionResult]:
        """Caption images by Selective Blind Guessing.

        Args:
            images: PIL images, paths, bytes or arrays (one, or a list); a bad input yields a result with ``error``.
            top_k_candidates: candidates generated per image, k (default 5); ``num_candidates`` is the same setting
                under the name every captioner uses.
            threshold: vocabulary keywords are taken until their softmax(100 cos) mass exceeds this.
            max_keywords: cap on vocabulary keywords (None: no cap).
            batch_size: images per model call (all their candidates are decoded together).
            settings: the decoding settings, as for :meth:`Captioner.caption <lib_clipcap.captioner.Captioner.caption>`
                (the options table's names), with the procedure's defaults: ``decoding="sample"`` (the paper; or
                ``"beam"``, k best beams, or ``"greedy"``, k = 1), ``top_k=50`` (what the original sampled with),
                ``max_new_tokens=67``; ``beam_size`` is at least k.
            rerank: ``"clip"`` (the paper: the candidate CLIP scores best wins), ``"clip+grammar"`` (plus the
                grammar head's probability, see :mod:`lib_clipcap.scoring`) or ``"none"`` (the generator's best).

        Returns:
            One :class:`~lib_clipcap.results.CaptionResult` per input: ``text`` (the chosen caption), ``keywords``
            (best first), and every candidate with its ``clip_score`` (CLIP-S = 2.5 max(cos, 0)).

        Raises:
            DecodingError, ClipCapError: invalid options (before any work is done).
        """
        from ..scoring import check_rerank_mode

        opts = self.decoding_options(top_k_candidates=top_k_candidates, **settings)
        rerank = check_rerank_mode(rerank)
        if not 0.0 <= threshold <= 1.0:
            raise ClipCapError(f"threshold must be between 0 and 1; got {threshold}")

        def caption_batch(imgs: list, start: int) -> list[CaptionResult]:
            batch_opts = opts if opts.seed is None else opts.replace(seed=opts.seed + start)
            return self.caption_pixels(self.clip.preprocess_images(imgs), batch_opts, threshold=threshold,
                                       max_keywords=max_keywords, rerank=rerank)

        return caption_in_batches(images, batch_size, caption_batch)

    def caption_pixels(self, pixels: torch.Tensor, options, *, threshold: float = DEFAULT_THRESHOLD,
                       max_keywords: int | None = DEFAULT_MAX_KEYWORDS,
                       rerank: str = DEFAULT_RERANK) -> list[CaptionResult]:
        """Caption preprocessed pixels ``[batch, 3, H, W]``."""
        with self._lock:
            feats = self.clip.encode_images(pixels, normalize=True)
            return self.caption_features(feats, options, threshold=threshold, max_keywords=max_keywords,
                                         rerank=rerank)

    def caption_features(self, features: torch.Tensor, options, *, threshold: float = DEFAULT_THRESHOLD,
                         max_keywords: int | None = DEFAULT_MAX_KEYWORDS,
                         rerank: str = DEFAULT_RERANK) -> list[CaptionResult]:
        """Caption CLIP image features ``[batch, D]``: keywords, one batched generation, CLIP re-ranking."""
        from ..scoring import check_rerank_mode, rerank_results, score_candidates

        rerank = check_rerank_mode(rerank)
        with self._lock, torch.inference_mode():
            kws = self.extractor.extract(features, threshold=threshold, max_keywords=max_keywords)
            room = self.generator.gpt.config.n_positions - min(options.max_new_tokens, 32)
            keywords = [self.generator.fit_keywords(kw.keywords, max(8, room)) for kw in kws]
            prompts = [self.generator.prompt(k) for k in keywords]
            generated = self.generator.generate(prompts, options)
            out = []
            for kw_list, cands in zip(keywords, generated):
                cs = [Candidate(g.text, g.score) for g in cands]
                out.append(CaptionResult(text=cs[0].text, score=cs[0].score, candidates=cs, keywords=kw_list))
            if rerank != "none":
                rerank_results(out, features, self.clip, mode=rerank, owner=self)
            else:  # keep the generator's order, but still report every candidate's CLIP score
                _, clip_s, _ = score_candidates(self.clip, features, [[c.text for c in r.candidates] for r in out])
                for r, row in zip(out, clip_s):
                    for c, s in zip(r.candidates, row):
                        c.clip_score = s
            for r in out:
                r.candidates = _dedupe(r.candidates)
        return out

    def keywords(self, images: Sequence | Any, *, threshold: float = DEFAULT_THRESHOLD,
                 max_keywords: int | None = DEFAULT_MAX_KEYWORDS, batch_size: int = 32) -> list[list[str]]:
        """Only the keywords of each image (best first); raises on an unreadable image."""
        from ..images import load_image

        if not isinstance(images, (list, tuple)):
            images = [images]
        out: list[list[str]] = []
        for start in range(0, len(images), batch_size):
            pixels = self.clip.preprocess_images([load_image(x) for x in images[start:start + batch_size]])
            with self._lock:
                feats = self.clip.encode_images(pixels, normalize=True)
                out += [r.keywords for r in self.extractor.extract(feats, threshold=threshold,
                                                                   max_keywords=max_keywords)]
        return out

    # -------------------------------------------------------------------------------------------------- memory
    def to(self, device=None, dtype=None) -> BlindGuesser:
        """Move CLIP, the generator (and a grammar head) to ``device`` / ``dtype``."""
        with self._lock:
            self.generator.to(device=device, dtype=dtype)
            self.clip.to(device=device, dtype=dtype)
            if device is not None:
                self.extractor.features = self.extractor.features.to(device)
            if self.grammar is not None:
                self.grammar.to(device=device, dtype=dtype)
        return self

    def unload(self) -> None:
        """Free the weights (the guesser cannot be used afterwards) and release cached GPU memory."""
        with self._lock:
            on_cuda = self.generator is not None and self.device.type == "cuda"
            self.generator = None  # type: ignore[assignment]
            self.clip = None
            self.extractor = None  # type: ignore[assignment]
            self.grammar = None
            if on_cuda:
                torch.cuda.empty_cache()

    def __repr__(self) -> str:
        if self.generator is None:
            return f"BlindGuesser({self.name!r}, unloaded)"
        return (f"BlindGuesser({self.name!r}, {self.generator!r}, CLIP {self.clip.name}, "
                f"{self.extractor.vocabulary!r}, device={self.device})")


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    """Drop repeated texts (sampling often repeats itself), keeping each text's best-ranked copy."""
    seen: set[str] = set()
    out = []
    for c in cands:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out
