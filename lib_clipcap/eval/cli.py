"""``python -m lib_clipcap eval``: caption a dataset and print the papers' table.

    python -m lib_clipcap eval flickr8k/captions.txt --model flickr8k --decoding beam --json out.json
    python -m lib_clipcap eval flickr8k/captions.txt --sbg sbg-flickr8k --sbg-top-k 1 2 5
    python -m lib_clipcap eval data/references.jsonl --model shapes-demo --style all
    python -m lib_clipcap eval --from-json a.json b.json --style flickr --markdown table.md
    python -m lib_clipcap eval data/captions.txt --checkpoint run/clipcap.safetensors --clip-model ... \
        --baseline nearest consensus --features run-features       # + "did training beat copying?" rows

Imports nothing heavy at module level (the command list is built on every ``--help``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "caption a dataset and score it (BLEU, METEOR, ROUGE-L, CIDEr, SPICE, CLIP-S)"

#: ClipCap models are evaluated greedily, as the published figures were; SBG models take the procedure's defaults
#: (lib_clipcap.sbg.defaults.DECODING_DEFAULTS: 5 sampled candidates, top-k 50).
CLIPCAP_DECODING_DEFAULTS = {"decoding": "greedy"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli_common import add_decoding_arguments, add_model_arguments

    p.add_argument("dataset", nargs="?", help="caption file: Flickr captions.txt / token file / results.csv, "
                                              "Karpathy dataset_*.json, COCO captions_*.json, FineCapEval.csv, "
                                              "or references.jsonl (or a folder holding one)")
    g = p.add_argument_group("dataset")
    g.add_argument("--format", default="auto", choices=["auto", "flickr", "karpathy", "coco", "finecapeval", "jsonl"])
    g.add_argument("--split", help="test (default for Flickr/Karpathy; Flickr: the last 1000 images), train, val, "
                                   "restval, all")
    g.add_argument("--images", type=Path, help="images folder (default: beside the caption file)")
    g.add_argument("--limit", type=int, help="evaluate only the first N images")
    g.add_argument("--test-images", type=int, default=1000, help="Flickr: size of the test split (last N images)")
    add_model_arguments(p)
    s = p.add_argument_group("SBG (instead of a ClipCap model)")
    s.add_argument("--sbg", metavar="NAME", help="registry SBG model (see `models`)")
    s.add_argument("--sbg-dir", type=Path, help="local SBG generator folder (with --clip-model/--clip-pretrained)")
    s.add_argument("--sbg-vocabulary", default="natural", help="SBG vocabulary: natural, shapes or a JSON file")
    s.add_argument("--sbg-top-k", type=int, nargs="+", default=[1], metavar="K",
                   help="candidates per image; one table row per K (the paper: 1 2 5)")
    from .baselines import DEFAULT_K, METHODS

    b = p.add_argument_group("retrieval baselines (rows beside the model's, or alone without a model)")
    b.add_argument("--baseline", nargs="+", choices=METHODS, default=[], metavar="METHOD",
                   help="nearest: the caption of the most similar training image (CLIP cosine); consensus: among "
                        "the k nearest training images' captions, the one most similar to the others (CIDEr-style "
                        "n-gram TF-IDF cosine; Devlin et al. 2015). Without --model/--checkpoint/--sbg only these "
                        "rows are computed")
    b.add_argument("--baseline-k", type=int, default=DEFAULT_K, help=f"consensus: neighbours (default {DEFAULT_K})")
    b.add_argument("--features", type=Path, help="features folder from `train features` (whole dataset) to retrieve "
                                                 "with; default: encode the training and test images with the "
                                                 "model's CLIP or --clip-model")
    add_decoding_arguments(p, method_defaults=CLIPCAP_DECODING_DEFAULTS,
                           mode_note="--sbg: sample, as the SBG procedure")
    m = p.add_argument_group("metrics and output")
    m.add_argument("--metrics", default="bleu,meteor,rouge,cider,spice,clip",
                   help="comma-separated: bleu, meteor, rouge, cider, spice, clip (default: all)")
    m.add_argument("--tokenizer-metrics", dest="metric_tokenizer", default="ptb", choices=["ptb", "simple"],
                   help="ptb: pycocoevalcap's PTB tokenizer (needs Java; as the papers); simple: no Java, NOT "
                        "comparable with published numbers")
    m.add_argument("--score-clip-model", help="CLIP for CLIP-S (default: the model's own; Hessel et al.: ViT-B-32)")
    m.add_argument("--score-clip-pretrained", help="its pretrained tag or weights file (e.g. openai)")
    m.add_argument("--clip-prefix", default="A photo depicts ", help="text before captions for CLIP-S ('' for none)")
    m.add_argument("--style", default="flickr", choices=["flickr", "coco", "clips", "all"],
                   help="table columns: flickr (Huynh et al.), coco (ClipCap), clips (CLIP-S paper), all")
    m.add_argument("--name", help="row name (default: the model's name)")
    m.add_argument("--json", dest="json_out", type=Path, help="write scores, settings and per-image captions here")
    m.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    m.add_argument("--from-json", nargs="+", type=Path, metavar="FILE",
                   help="only print the table of saved results (no model, no dataset)")
    m.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def _caption_kwargs(args: argparse.Namespace, *, sbg: bool) -> dict:
    from ..cli_common import decoding_kwargs

    if sbg:
        from ..sbg.defaults import DECODING_DEFAULTS

        return decoding_kwargs(args, method_defaults=DECODING_DEFAULTS)
    return decoding_kwargs(args, method_defaults=CLIPCAP_DECODING_DEFAULTS)


def _load_sbg(args: argparse.Namespace):
    import os

    from ..sbg import BlindGuesser

    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    common = dict(models_dir=args.models_dir, device=args.device, dtype=args.dtype)
    if args.sbg:
        return BlindGuesser.from_pretrained(args.sbg, **common)
    from ..errors import ClipCapError

    if not args.clip_model:
        raise ClipCapError("--sbg-dir needs --clip-model and --clip-pretrained (the CLIP the keywords come from)")
    return BlindGuesser.from_files(args.sbg_dir, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                   vocabulary=args.sbg_vocabulary, tokenizer=args.tokenizer, **common)


def run(args: argparse.Namespace) -> int:
    from ..cli_common import eprint
    from ..errors import ClipCapError
    from .report import format_table, load_json, save_json

    if args.from_json:
        rows = [r for f in args.from_json for r in load_json(f)]
        text = format_table(rows, style=args.style)
        print(text)
        if args.markdown:
            from ..fileio import atomic_write_text

            atomic_write_text(args.markdown, format_table(rows, style=args.style, markdown=True) + "\n")
        return 0
    if not args.dataset:
        raise ClipCapError("give a dataset file (or --from-json FILE... to print saved results)")
    from .datasets import load_dataset
    from .runner import evaluate

    metrics = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    kwargs = {"test_images": args.test_images} if args.format in ("auto", "flickr") else {}
    try:
        data = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images,
                            limit=args.limit, **kwargs)
    except TypeError:  # a non-Flickr file detected automatically does not take test_images
        data = load_dataset(args.dataset, format=args.format, split=args.split, images=args.images, limit=args.limit)
    eprint(f"dataset: {data.name} ({data.format}, split {data.split}): {len(data)} images")
    sbg = bool(args.sbg or args.sbg_dir)
    with_model = sbg or bool(args.model or args.checkpoint) or not args.baseline
    model = None
    if sbg:
        model = _load_sbg(args)
    elif with_model:
        from ..cli_common import load_captioner

        model = load_captioner(args)
    if model is not None:
        eprint(f"model: {model!r}")
    score_clip = None
    if args.score_clip_model:
        from ..clip import ClipBackbone

        score_clip = ClipBackbone.load(args.score_clip_model, args.score_clip_pretrained,
                                       device=model.clip.device if model is not None else args.device,
                                       dtype=model.clip.dtype if model is not None else None)
    batch_size = args.batch_size
    settings = {"model": args.model or args.sbg or str(args.checkpoint or args.sbg_dir or ""), "dataset_file":
                str(args.dataset)}
    results = []
    if model is not None:
        kw = _caption_kwargs(args, sbg=sbg)
        for k in (args.sbg_top_k if sbg else [None]):
            run_kw = dict(kw, top_k_candidates=k) if sbg else kw
            name = args.name or (f"{model.name} top-{k}" if sbg else model.name)
            results.append(evaluate(model, data, metrics=metrics, tokenizer=args.metric_tokenizer,
                                    score_clip=score_clip, clip_prefix=args.clip_prefix, batch_size=batch_size,
                                    name=name, progress=args.progress, settings=settings, **run_kw))
    if args.baseline:
        results += _baselines(args, data, model, score_clip, metrics, kwargs)
    print(format_table(results, style=args.style))
    if args.json_out:
        save_json(results if len(results) > 1 else results[0], args.json_out)
        eprint(f"wrote {args.json_out}")
    if args.markdown:
        from ..fileio import atomic_write_text

        atomic_write_text(args.markdown, format_table(results, style=args.style, markdown=True) + "\n")
        eprint(f"wrote {args.markdown}")
    failed = sum(r.failed for r in results)
    if failed:
        eprint(f"{failed} image(s) could not be read; they were scored as empty captions (see the JSON 'error' fields)")
    return 1 if failed else 0


def _baselines(args: argparse.Namespace, data, model, score_clip, metrics: list[str], reader_kwargs: dict) -> list:
    """The retrieval-baseline rows (:mod:`.baselines`) for ``data``, from --features or computed with a CLIP."""
    from ..cli_common import eprint
    from .baselines import retrieval_inputs
    from .datasets import load_dataset
    from .runner import evaluate_baseline

    clip = model.clip if model is not None else None
    if clip is None and args.clip_model:
        from ..devices import device_and_dtype
        from ..clip import ClipBackbone

        dev, dt = device_and_dtype(args.device, args.dtype)
        clip = ClipBackbone.load(args.clip_model, args.clip_pretrained, device=dev, dtype=dt)
    train_data = None
    if args.features is None:
        try:
            train_data = load_dataset(args.dataset, format=args.format, split="train", images=args.images,
                                      **reader_kwargs)
        except TypeError:
            train_data = load_dataset(args.dataset, format=args.format, split="train", images=args.images)
        eprint(f"baselines: encoding {len(train_data)} training and {len(data)} evaluated images")
    inputs = retrieval_inputs(data, features=args.features, train_dataset=train_data, clip=clip,
                              batch_size=args.batch_size)
    score = score_clip if score_clip is not None else clip
    settings = {"dataset_file": str(args.dataset), "features": str(args.features or "")}
    return [evaluate_baseline(data, method, train_features=inputs.train_features,
                              train_captions=inputs.train_captions, train_ids=inputs.train_ids,
                              query_features=inputs.query_features, valid=inputs.query_valid, k=args.baseline_k,
                              metrics=metrics, tokenizer=args.metric_tokenizer, clip=score,
                              clip_prefix=args.clip_prefix, batch_size=args.batch_size, settings=settings)
            for method in args.baseline]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m lib_clipcap eval` is the entry
    p = argparse.ArgumentParser(prog="python -m lib_clipcap eval", description=HELP)
    add_arguments(p)
    return run(p.parse_args(argv))

