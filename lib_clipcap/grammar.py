"""The CLIP-S grammar head: a 2-layer MLP over CLIP text features that tells grammatical captions from broken ones.

Cho et al. (2022) found that rewarding captions with CLIP similarity alone degrades their grammar, and added a head
on CLIP's text encoder trained to classify a caption as grammatical or not; negatives are made from reference
captions by randomly repeating, inserting, swapping, shuffling or removing words (:func:`corrupt`). We use it to
re-rank candidates (``rerank="clip+grammar"``) and as a reward term for RL.

Files: ``grammar.safetensors`` (head weights ``head.*``, plus ``text.*`` when the CLIP text encoder was fine-tuned
alongside) and ``grammar.json`` (:class:`GrammarConfig`: CLIP backbone, sizes, training metrics).
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ClipCapError, IncompatibleCheckpointError, MissingFileError

log = logging.getLogger(__name__)

CORRUPTIONS = ("repeat", "insert", "swap", "shuffle", "remove")
WEIGHTS_NAME = "grammar.safetensors"
CONFIG_NAME = "grammar.json"
BUNDLED_DIRS = ("assets/sbg/grammar",)
_END = (".", "!", "?")


# ------------------------------------------------------------------------------------------------- negatives
def _split(caption: str) -> tuple[list[str], str]:
    text = caption.strip()
    end = ""
    while text and text[-1] in _END:
        end = text[-1] + end
        text = text[:-1].rstrip()
    return text.split(), end


def corrupt(caption: str, rng: random.Random, *, op: str | None = None, filler: Sequence[str] = ()) -> str:
    """One ungrammatical variant of ``caption`` (word level; the final punctuation stays at the end).

    Args:
        op: one of :data:`CORRUPTIONS` (default: a random one). ``repeat`` doubles a word or two-word span in place,
            ``insert`` puts a random word (from ``filler``, else from the caption) at a random place, ``swap``
            exchanges two neighbouring different words, ``shuffle`` permutes all words, ``remove`` drops a word.
        filler: words to insert (e.g. the corpus vocabulary).
    """
    words, end = _split(caption)
    if op is None:
        op = rng.choice(CORRUPTIONS if len(words) > 2 else ("repeat", "insert"))
    if op not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {op!r}; use one of {', '.join(CORRUPTIONS)}")
    n = len(words)
    if n == 0:
        return caption
    w = list(words)
    if op == "repeat":
        i = rng.randrange(n)
        span = rng.choice((1, 2)) if i < n - 1 else 1
        w[i + span:i + span] = w[i:i + span]
    elif op == "insert":
        w.insert(rng.randrange(n + 1), rng.choice(list(filler) or words))
    elif op == "swap" and n > 1:
        pairs = [i for i in range(n - 1) if w[i] != w[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            w[i], w[i + 1] = w[i + 1], w[i]
    elif op == "shuffle" and n > 1:
        for _ in range(10):
            rng.shuffle(w)
            if w != words:
                break
    elif op == "remove" and n > 1:
        del w[rng.randrange(n)]
    return " ".join(w) + end


def make_negatives(captions: Sequence[str], rng: random.Random, *, per_caption: int = 1,
                   clean: Iterable[str] | None = None, filler: Sequence[str] | None = None) -> list[str]:
    """``per_caption`` corrupted variants of each caption that differ from every known clean caption."""
    clean_set = set(clean if clean is not None else captions)
    if filler is None:
        filler = sorted({w for c in clean_set for w in _split(c)[0]})
    out = []
    for c in captions:
        for _ in range(per_caption):
            for _ in range(20):
                bad = corrupt(c, rng, filler=filler)
                if bad not in clean_set and bad != c:
                    out.append(bad)
                    break
    return out


# ----------------------------------------------------------------------------------------------------- model
def portable_weights_name(pretrained: str | None) -> str | None:
    """How a saved config names the CLIP weights it was trained on, without a path of this machine: a file shipped
    in the package as ``bundled:<path>``, any other file by its name, a tag (``"openai"``) as it is."""
    if not pretrained:
        return pretrained
    path = Path(pretrained)
    if not path.is_absolute():
        return pretrained
    package = Path(__file__).resolve().parent
    try:
        return "bundled:" + path.resolve().relative_to(package).as_posix()
    except ValueError:
        return path.name


@dataclass
class GrammarConfig:
    """What a saved grammar head needs to be rebuilt, and how it was trained."""

    clip_model: str
    clip_pretrained: str | None
    embed_dim: int
    hidden: int
    finetuned_text: bool = False
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    metrics: dict = field(default_factory=dict)
    version: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> GrammarConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class GrammarHead(nn.Module):
    """``Linear(D, H) -> ReLU -> Linear(H, 2)`` over L2-normalised CLIP text features; class 1 = grammatical."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, text_features: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(text_features)))


def _text_param_names(model: nn.Module) -> list[str]:
    """Text-tower parameters worth fine-tuning: everything but the image tower, the logit scale and the (large,
    mostly unused) token embedding, which stays frozen so a saved head stays small."""
    skip = ("visual.", "logit_scale", "logit_bias")
    return [n for n, _ in model.named_parameters()
            if not n.startswith(skip) and "token_embedding" not in n and "word_embeddings" not in n]


def _text_copy(clip_model: nn.Module) -> nn.Module:
    """A copy of an open_clip model without its image tower (encode_text never uses it)."""
    visual = clip_model.visual
    try:
        clip_model.visual = None
        out = copy.deepcopy(clip_model)
    finally:
        clip_model.visual = visual
    return out


class GrammarScorer:
    """A grammar head bound to a CLIP backbone; :meth:`probability` gives P(grammatical) per caption.

    Args:
        head: the MLP.
        clip: the :class:`~lib_clipcap.clip.ClipBackbone` whose tokenizer (and, unless ``text_model`` is given,
            text encoder) produces the features.
        config: its :class:`GrammarConfig`.
        text_model: a fine-tuned copy of the CLIP model's text tower (None: use ``clip``'s own).
    """

    def __init__(self, head: GrammarHead, clip, config: GrammarConfig, *, text_model: nn.Module | None = None) -> None:
        self.head = head.eval().requires_grad_(False)
        self.clip = clip
        self.config = config
        self.text_model = text_model.eval().requires_grad_(False) if text_model is not None else None

    def _encode(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        if self.text_model is None:
            return self.clip.encode_texts(list(texts), normalize=True, batch_size=batch_size).float()
        dev = next(self.text_model.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.clip.tokenizer(list(texts[i:i + batch_size])).to(dev)
            out.append(self.text_model.encode_text(tokens, normalize=True).float())
        return torch.cat(out)

    @torch.inference_mode()
    def probability(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """P(grammatical) for each text: ``[n]`` float32 (on the head's device)."""
        if not texts:
            return torch.empty(0)
        feats = self._encode(texts, batch_size)
        p = next(self.head.parameters())
        return self.head(feats.to(p.device, p.dtype)).float().softmax(-1)[:, 1]

    @property
    def model(self) -> nn.Module:
        """The scorer's own weights (the head, and the fine-tuned text tower when it has one) as one module, for
        memory managers that take a module (the CLIP backbone it reads is its owner's)."""
        parts = {"head": self.head}
        if self.text_model is not None:
            parts["text_model"] = self.text_model
        return nn.ModuleDict(parts)

    def to(self, device=None, dtype=None) -> GrammarScorer:
        self.head.to(device=device)
        if self.text_model is not None:
            self.text_model.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``grammar.safetensors`` + ``grammar.json`` into ``folder`` (atomically)."""
        from safetensors.torch import save_file

        from .fileio import atomic_replace, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = {f"head.{k}": v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        if self.text_model is not None:
            names = set(_text_param_names(self.text_model))
            text_sd = {k: v for k, v in self.text_model.state_dict().items() if k in names}
            # saved in open_clip's layout whatever the backbone, so a head loads under either CLIP implementation
            to_open_clip = getattr(self.text_model, "state_dict_to_open_clip", None)
            text_sd = to_open_clip(text_sd) if to_open_clip is not None else text_sd
            sd.update({f"text.{k}": v.detach().half().cpu().contiguous() for k, v in text_sd.items()})
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_file(sd, str(tmp), metadata={"grammar_config": json.dumps(asdict(self.config))})
        atomic_replace(tmp, folder / WEIGHTS_NAME)
        atomic_write_text(folder / CONFIG_NAME, json.dumps(asdict(self.config), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path, clip) -> GrammarScorer:
        """Load a saved head for ``clip`` (a folder holding ``grammar.safetensors``, or that file).

        Raises:
            MissingFileError: nothing at ``path``.
            IncompatibleCheckpointError: the head was trained on another CLIP backbone or feature size.
            CheckpointError: the file is not a grammar head.
        """
        from safetensors.torch import load_file

        p = Path(path).expanduser()
        weights = p / WEIGHTS_NAME if p.is_dir() else p
        cfg_file = weights.with_name(CONFIG_NAME)
        if not weights.is_file() or not cfg_file.is_file():
            raise MissingFileError(f"grammar head not found: expected {weights} and {cfg_file}")
        try:
            config = GrammarConfig.from_dict(json.loads(cfg_file.read_text(encoding="utf-8")))
            sd = load_file(str(weights))
        except Exception as e:  # JSON, safetensors and TypeError for missing fields all mean a broken file
            raise CheckpointError(f"{weights} is not a readable grammar head: {e}") from e
        if config.embed_dim != clip.embed_dim:
            raise IncompatibleCheckpointError(
                f"grammar head {weights} expects {config.embed_dim}-d CLIP text features from {config.clip_model!r}, "
                f"but CLIP {clip.name!r} gives {clip.embed_dim}-d; use a head trained for this backbone")
        if config.clip_model != clip.name:
            log.warning("grammar head %s was trained on CLIP %s, used with %s", weights, config.clip_model, clip.name)
        head = GrammarHead(config.embed_dim, config.hidden)
        head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")}, strict=True)
        text_model = None
        text_sd = {k[5:]: v for k, v in sd.items() if k.startswith("text.")}
        if text_sd:
            text_model = _text_copy(clip.model)
            from_open_clip = getattr(text_model, "state_dict_from_open_clip", None)  # the transformers backbone
            if from_open_clip is not None:
                try:
                    text_sd = from_open_clip(text_sd)
                except IncompatibleCheckpointError as e:
                    raise IncompatibleCheckpointError(f"{weights}: {e}; it does not fit CLIP {clip.name!r}") from e
            missing = [k for k in text_sd if k not in dict(text_model.named_parameters())]
            if missing:
                raise IncompatibleCheckpointError(f"{weights}: text-encoder tensors {missing[:3]} do not fit "
                                                  f"CLIP {clip.name!r}")
            text_model.load_state_dict(text_sd, strict=False)
            text_model.to(device=clip.device, dtype=clip.dtype)
        head.to(clip.device)
        return cls(head, clip, config, text_model=text_model)


def bundled_grammar_for(clip) -> GrammarScorer | None:
    """The grammar head shipped with the package for this CLIP backbone (by name and feature size), if any."""
    from .registry import package_path

    for rel in BUNDLED_DIRS:
        folder = package_path(rel)
        cfg = folder / CONFIG_NAME
        if not cfg.is_file():
            continue
        try:
            d = json.loads(cfg.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if d.get("clip_model") == clip.name and d.get("embed_dim") == clip.embed_dim:
            return GrammarScorer.load(folder, clip)
    return None


# -------------------------------------------------------------------------------------------------- training
@torch.inference_mode()
def evaluate_grammar(scorer: GrammarScorer, captions: Sequence[str], *, seed: int = 1234,
                     clean: Iterable[str] | None = None) -> dict[str, float]:
    """Accuracy on ``captions`` (label 1) and one corrupted variant of each (label 0), at threshold 0.5."""
    rng = random.Random(seed)
    negatives = make_negatives(captions, rng, clean=set(clean or ()) | set(captions))
    p_clean = scorer.probability(list(captions)).cpu()
    p_bad = scorer.probability(negatives).cpu()
    ok_clean = (p_clean > 0.5).float()
    ok_bad = (p_bad <= 0.5).float()
    return {"accuracy": float(torch.cat([ok_clean, ok_bad]).mean()), "clean_accuracy": float(ok_clean.mean()),
            "corrupted_accuracy": float(ok_bad.mean()), "pairs": len(captions)}


def train_grammar_head(clip, captions: Sequence[str], *, val_captions: Sequence[str] = (), steps: int = 1000,
                       batch_size: int = 256, lr: float = 1e-3, hidden: int | None = None,
                       finetune_text: bool = False, text_lr: float = 1e-4, negatives_per_caption: int = 4,
                       seed: int = 0, log_every: int = 100,
                       progress: Callable[[str], None] | None = None) -> tuple[GrammarScorer, dict]:
    """Train a grammar head on ``captions`` (clean) and their corruptions.

    Args:
        clip: the CLIP backbone whose text features the head reads.
        captions: clean training captions (any corpus).
        val_captions: held-out clean captions for the reported accuracy (none: no validation).
        steps, batch_size, lr: optimisation (AdamW); each batch is half clean, half corrupted.
        hidden: MLP width (default: the feature size, as in CLIP-S).
        finetune_text: also fine-tune CLIP's text encoder (a copy; the token embedding stays frozen) at ``text_lr``.
        negatives_per_caption: corrupted variants made per clean caption (fixed-encoder mode; regenerated on the
            fly when fine-tuning).

    Returns:
        ``(scorer, metrics)``; metrics hold the final training loss and the validation accuracies.

    Raises:
        ClipCapError: fewer than 2 distinct training captions.
    """
    say = progress or (lambda s: log.info(s))
    captions = sorted({c.strip() for c in captions if c.strip()})
    if len(captions) < 2:
        raise ClipCapError(f"need at least 2 distinct captions to train a grammar head; got {len(captions)}")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    clean_set = set(captions) | {c.strip() for c in val_captions}
    filler = sorted({w for c in captions for w in _split(c)[0]})
    dim = clip.embed_dim
    head = GrammarHead(dim, hidden or dim).to(clip.device)
    text_model = None
    params = list(head.parameters())
    groups = [{"params": params, "lr": lr}]
    if finetune_text:
        text_model = _text_copy(clip.model).float().to(clip.device).train()
        names = set(_text_param_names(text_model))
        for n, p in text_model.named_parameters():
            p.requires_grad_(n in names)
        groups.append({"params": [p for n, p in text_model.named_parameters() if n in names], "lr": text_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                pct_start=0.1)
    half = max(1, batch_size // 2)
    loss_v = float("nan")
    if text_model is None:
        neg = make_negatives(captions, rng, per_caption=negatives_per_caption, clean=clean_set, filler=filler)
        # clone(): encode_texts runs in inference mode, and autograd must be able to save these as Linear inputs
        pos_f = clip.encode_texts(captions, normalize=True).float().clone()
        neg_f = clip.encode_texts(neg, normalize=True).float().clone()
    for step in range(steps):
        if text_model is None:
            pi = torch.randint(len(captions), (half,))
            ni = torch.randint(len(neg), (half,))
            x = torch.cat([pos_f[pi], neg_f[ni]])
        else:
            pos = [captions[rng.randrange(len(captions))] for _ in range(half)]
            bad = make_negatives(pos, rng, clean=clean_set, filler=filler)
            tokens = clip.tokenizer(pos + bad).to(clip.device)
            x = text_model.encode_text(tokens, normalize=True).float()
            half_b = len(bad)
        y = torch.cat([torch.ones(half, dtype=torch.long),
                       torch.zeros(half if text_model is None else half_b, dtype=torch.long)]).to(clip.device)
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_v = float(loss.detach())
        if log_every and (step % log_every == 0 or step == steps - 1):
            say(f"grammar step {step} loss {loss_v:.4f}")
    config = GrammarConfig(clip_model=clip.name, clip_pretrained=portable_weights_name(clip.pretrained),
                           embed_dim=dim, hidden=hidden or dim, finetuned_text=finetune_text)
    if text_model is not None:
        text_model.to(dtype=clip.dtype)
    scorer = GrammarScorer(head, clip, config, text_model=text_model)
    metrics: dict = {"train_loss": loss_v, "train_captions": len(captions), "steps": steps}
    if val_captions:
        metrics.update({f"val_{k}": v for k, v in evaluate_grammar(scorer, list(val_captions),
                                                                   clean=clean_set).items()})
    scorer.config.metrics = metrics
    return scorer, metrics
