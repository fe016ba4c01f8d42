"""GPT-2-style byte-level BPE tokenizers, through the ``tokenizers`` library.

Reads the two layouts checkpoints come with: a ``tokenizer.json`` (our custom tokenizers, any HF fast tokenizer) or
GPT-2's ``vocab.json`` + ``merges.txt`` (also under their original names ``encoder.json`` + ``vocab.bpe``). Using
``tokenizers`` directly keeps us independent of the transformers version the WebUI host pins.
"""

from __future__ import annotations

from pathlib import Path

from .errors import MissingFileError

EOS_TEXT = "<|endoftext|>"


class Tokenizer:
    """A byte-level BPE tokenizer with an end-of-text token."""

    def __init__(self, backend, *, eos_token_id: int, source: str = "") -> None:
        self.backend = backend
        self.eos_token_id = int(eos_token_id)
        self.source = source

    @classmethod
    def from_path(cls, path: str | Path) -> Tokenizer:
        """Load from a ``tokenizer.json`` file or a folder holding one, or GPT-2's vocab/merges files.

        Raises:
            MissingFileError: nothing loadable is at ``path``.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        p = Path(path).expanduser()
        if p.is_dir() and (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        if p.is_file() and p.suffix == ".json" and p.name not in ("vocab.json", "encoder.json"):
            backend = HFTokenizer.from_file(str(p))
        else:
            folder = p if p.is_dir() else p.parent
            vocab = next((folder / n for n in ("vocab.json", "encoder.json") if (folder / n).is_file()), None)
            merges = next((folder / n for n in ("merges.txt", "vocab.bpe") if (folder / n).is_file()), None)
            if vocab is None or merges is None:
                raise MissingFileError(
                    f"no tokenizer found at {p}: expected tokenizer.json, or vocab.json + merges.txt "
                    f"(GPT-2's files); put them there or pass tokenizer='gpt2' to download GPT-2's"
                )
            backend = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
        eos = backend.token_to_id(EOS_TEXT)
        if eos is None:
            vocab_map = backend.get_vocab()
            eos = max(vocab_map.values())  # GPT-2 convention: EOS is the last id
        return cls(backend, eos_token_id=eos, source=str(p))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode([i for i in ids if i != self.eos_token_id], skip_special_tokens=True)

    def token_id(self, text: str) -> int | None:
        """The id of ``text`` if it encodes to exactly one token, else None."""
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json``."""
        self.backend.save(str(path))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos={self.eos_token_id}, source={self.source!r})"

