"""CLIP's byte-level BPE text tokenizer, as open_clip's ``SimpleTokenizer`` (lowercased, ``clean="lower"``).

Why a copy of open_clip's tokenizer here: the transformers CLIP backbone (:mod:`lib_clipcap.clip_transformers`) serves
environments where open_clip is missing or too old to use (Forge Classic pins open-clip-torch 1.3.0, whose
``tokenize`` does not even keep the end-of-text token when it truncates), and its tokens must equal current
open_clip's, token for token. The algorithm is OpenAI CLIP's ``simple_tokenizer.py`` (MIT License, Copyright (c) 2021
OpenAI) as open_clip carries it; the vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz``, read from the installed
open_clip package when there is one (every version since 1.0 ships the same file), else from the copy bundled in
``lib_clipcap/assets/clip_bpe/`` (see its README.md). Nothing is imported from open_clip: its package ``__init__``
imports its whole model zoo, and an old one may not import at all under a current torch.

Importing this module costs nothing; ``ftfy``, ``regex`` and ``torch`` load on first use.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
#: sha256 of OpenAI's vocabulary file (identical in open_clip 1.3.0 and 3.x and in OpenAI's ``clip`` package).
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
BUNDLED_VOCAB = Path(__file__).resolve().parent / "assets" / "clip_bpe" / VOCAB_NAME
SOT = "<start_of_text>"
EOT = "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 77


def package_file(package: str, name: str) -> Path | None:
    """``name`` inside an installed top-level ``package``, found without importing (executing) the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def vocabulary_path() -> Path:
    """The BPE vocabulary file to read: the host's open_clip copy (or OpenAI ``clip``'s) when installed, else ours.

    A host copy is used only when its sha256 is the known one, so a patched or truncated file never changes tokens.
    """
    for package in ("open_clip", "clip"):
        path = package_file(package, VOCAB_NAME)
        if path is not None and _sha256(path) == VOCAB_SHA256:
            return path
    return BUNDLED_VOCAB


@functools.lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable character table (whitespace and control bytes moved above 255)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:])}


def clean_text(text: str) -> str:
    """open_clip's ``clean="lower"``: ftfy repair, HTML unescaped twice, whitespace collapsed, lowercased."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipBpeTokenizer:
    """open_clip's ``SimpleTokenizer``: ``tokenizer(texts)`` -> ``[len(texts), context_length]`` int64 token ids.

    Each text becomes ``<start_of_text> ... <end_of_text>``, padded with 0; a text too long for the context is cut
    and its last token replaced by ``<end_of_text>`` (the text tower pools at the end-of-text position, the highest
    id). Picklable (the vocabulary is re-read from its path).

    Args:
        context_length: default length of the token rows (the model config's ``text_cfg.context_length``).
        vocab_path: the vocabulary file (default :func:`vocabulary_path`).
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, vocab_path: str | Path | None = None) -> None:
        self.context_length = int(context_length)
        self.vocab_path = Path(vocab_path) if vocab_path else vocabulary_path()
        self._load()

    def _load(self) -> None:
        import regex

        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(self.vocab_path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {SOT: SOT, EOT: EOT}
        self.pat = regex.compile(
            f"{SOT}|{EOT}" + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[SOT]
        self.eot_token_id = self.encoder[EOT]

    def __getstate__(self) -> dict[str, Any]:
        return {"context_length": self.context_length, "vocab_path": str(self.vocab_path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.context_length = state["context_length"]
        self.vocab_path = Path(state["vocab_path"])
        self._load()

    def bpe(self, token: str) -> str:
        """The space-separated BPE pieces of one pre-token (the last piece marked with ``</w>``)."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end markers."""
        ids: list[int] = []
        for token in self.pat.findall(clean_text(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (``</w>`` becomes a space)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytearray([self.byte_decoder[c] for c in text]).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Any:
        """``[len(texts), context_length]`` ``torch.long`` token ids (see the class docstring)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        ctx = int(context_length or self.context_length)
        result = torch.zeros(len(texts), ctx, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > ctx:
                tokens = tokens[:ctx]
                tokens[-1] = self.eot_token_id
            result[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return result
