"""HTTP routes of caption review under ``/clipcap/v1``: scan a folder into a scored, paged table; save one caption;
undo the last save.

- ``POST /review``: body ``{"folder": ..., options}`` -> ``{"total", "offset", "limit", "rows": [...], "summary",
  ...}``, rows worst first (``sort``: clip, grammar, ref, length, path), filtered (``flags``, ``text``/``regex``,
  ``min_score``/``max_score``), paged (``offset``, ``limit`` <= 1000). Each row has its ``triggers`` (the trigger
  words it starts with, given in ``triggers`` or detected) apart from its ``body``, which is what is scored. ``"rescan": false`` reuses the server's last
  scan of the same folder (for paging); scores come from CLIP (the ``model``'s, default: the server's default model)
  with image features cached on disk, so a re-scan after edits is cheap.
- ``PUT /review/caption``: ``{"folder", "image", "caption"}`` -> the saved row, rescored. The caption must be one line:
  control characters and line breaks (``U+2028``/``U+2029`` included) are refused with 422, by batch tagging's own
  text rule (:mod:`lib_clipcap.textrules`). Saved atomically through the batch writer and journal. The row's trigger
  words (``triggers`` given, or detected) are kept first, once: send the caption's body or the whole caption
  (``"keep_triggers": false`` writes ``caption`` exactly as sent).
- ``POST /review/undo``: ``{"folder"}`` -> the files the last save changed, restored.
- Tags (kohya-style tag captions, :mod:`lib_clipcap.review.tags`): each row of ``POST /review`` has its ``tags``
  (trigger words apart) and, once scored, ``tag_scores`` (each tag's CLIP-S against the image, lowest first, with its
  vocabulary ``probability`` and ``flagged`` / ``better`` when the image disagrees) and ``tag_min``; ``tag``
  (a tag or a list) keeps only rows holding those tags, ``"sort": "tags"`` puts the rows whose tags the image
  disagrees with most first, ``tag_vocabulary`` (a bundled name or a vocabulary file inside the allowed folders;
  default ``general``; ``"none"``: no tag scores) gives the tags' prompts and categories; the response's
  ``tag_counts`` lists every tag of the folder with its number of rows. ``POST /review/tags``: ``{"folder",
  "images": [...], "add": [...], "remove": [...]}`` adds and removes tags across those images as one save (atomic,
  journaled, one undo step; ``"dry_run": true`` only says what would change) -> ``{"changed", "files", "rows",
  "undo_depth"}``.

The same rules as batch tagging: the folders a job manager allows, nothing without one (503); 403 outside them. A
caption or reference file that is a symlink leading outside them is not read: its row says so in ``caption_error``.
A ``regex`` filter runs in a worker thread with a time limit (422 when it runs out), so it never stalls the server.
"""

# No ``from __future__ import annotations``: FastAPI 0.94 (A1111) resolves route annotations at creation.

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..options_table import OptionError

__all__ = ["add_review_routes"]

_BODY_LIMIT = 256 * 1024
_MAX_LIMIT = 1000
_SCAN_FIELDS = ["folder", "caption_ext", "output_dir", "recursive", "triggers", "token_limit", "duplicate_min",
                "ref_ext", "ref_dir"]
_REVIEW_FIELDS = _SCAN_FIELDS + ["rescan", "model", "scores", "grammar", "clip_prefix", "sort", "descending", "flags",
                                 "text", "regex", "min_score", "max_score", "score", "offset", "limit", "tag",
                                 "tag_vocabulary"]
_TAGS_FIELDS = _SCAN_FIELDS + ["images", "add", "remove", "rescore", "dry_run"]


def _str(data: dict[str, Any], name: str, default: str | None = None) -> str | None:
    v = data.get(name, default)
    if v is not None and not isinstance(v, str):
        raise OptionError(name, v, "must be a string")
    return v


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    v = data.get(name, default)
    if not isinstance(v, bool):
        raise OptionError(name, v, "must be true or false")
    return v


def _int(data: dict[str, Any], name: str, default: int, lo: int, hi: int | None = None) -> int:
    v = data.get(name, default)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise OptionError(name, v, f"must be an integer between {lo} and {hi}" if hi is not None
                          else f"must be an integer >= {lo}")
    return v


def _num(data: dict[str, Any], name: str) -> float | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OptionError(name, v, "must be a finite number")
    return float(v)


def _strings(data: dict[str, Any], name: str) -> list[str] | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise OptionError(name, v, "must be a list of strings")
    return v


def add_review_routes(router: APIRouter, manager: Any, job_manager: Any, current_default: Callable[[], str],
                      unavailable: str | None = None, *, read_json: Callable[..., Awaitable[dict[str, Any]]],
                      api_error: type) -> None:
    """Add the review routes to the ``/clipcap/v1`` router (called at the end of ``api.create_router``).

    Args:
        router: The API router (its route class answers errors as JSON).
        manager: The model manager (scoring uses the model's CLIP through it).
        job_manager: The batch job manager whose folders and caption suffixes limit review; ``None``: the routes
            answer 503, as the batch routes do.
        current_default: The server's default model name.
        unavailable: The batch routes' 503 message when ``job_manager`` is ``None`` (it names the setting that
            allows folders); review says the same.
        read_json: The API's body reader (``read_json(request, limit)``: JSON objects only, size-limited).
        api_error: The API's error class (``api_error(status, type, message, **extra)``), which its route class
            answers as a JSON error body. Both are handed in rather than imported: the API module imports this one.
    """
    from ..batch.errors import BatchInputError, BatchLockedError, PathNotAllowedError
    from ..registry import get_model
    from .edits import ReviewEditError, UnknownImageError, undo_depth
    from .flags import CaptionTextError
    from .service import ReviewService
    from .tags import DEFAULT_VOCABULARY, check_tags, tag_counts

    ApiError = api_error  # noqa: N806 - used as the class it is
    _read_json = read_json

    def _check_fields(data: dict[str, Any], allowed: list[str]) -> None:
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise ApiError(422, "invalid_option", f"unknown field {unknown[0]!r}; valid fields: {', '.join(allowed)}",
                           field=unknown[0])

    def _resolve_model(name: Any, default: str) -> str:
        if name is None or name == "":
            name = default
        if not isinstance(name, str):
            raise OptionError("model", name, "must be a model name (a string)")
        return get_model(name).name  # UnknownModelError -> 404 listing the valid names

    state: dict[str, Any] = {}

    def service() -> ReviewService:
        if job_manager is None:
            raise ApiError(503, "review_unavailable", "caption review uses the folders allowed for batch tagging: "
                           + (unavailable or "batch tagging is not enabled on this server (the standalone server "
                                             "enables it with --batch-root FOLDER)"))
        if "svc" not in state:
            state["svc"] = ReviewService.for_jobs(manager, job_manager)
        return state["svc"]

    def params(svc: ReviewService, data: dict[str, Any]) -> Any:
        folder = _str(data, "folder")
        if not folder:
            raise OptionError("folder", folder, "is required: the folder of images to review")
        return svc.params(folder, caption_ext=_str(data, "caption_ext", ".txt"), output_dir=_str(data, "output_dir"),
                          recursive=_bool(data, "recursive", True), triggers=_strings(data, "triggers"),
                          token_limit=_int(data, "token_limit", 75, 1), duplicate_min=_int(data, "duplicate_min", 3, 2),
                          ref_ext=_str(data, "ref_ext"), ref_dir=_str(data, "ref_dir"))

    async def folder_request(request: Request, fields: list[str]) -> tuple[ReviewService, dict[str, Any], Any]:
        """What every folder route starts with: the service, the checked JSON body and the folder's parameters."""
        svc = service()
        data = await _read_json(request, _BODY_LIMIT)
        _check_fields(data, fields)
        return svc, data, run(lambda: params(svc, data))

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except PathNotAllowedError as e:
            raise ApiError(403, "forbidden_path", str(e)) from None
        except BatchInputError as e:
            raise ApiError(404, "folder_not_found", str(e)) from None
        except CaptionTextError as e:
            raise ApiError(422, "invalid_caption", str(e), field="caption") from None
        except UnknownImageError as e:
            raise ApiError(404, "unknown_image", str(e)) from None
        except ReviewEditError as e:
            raise ApiError(422, "invalid_request", str(e)) from None
        except BatchLockedError as e:
            raise ApiError(409, "folder_busy", str(e)) from None

    @router.post("/review", summary="Scan a tagged folder: scored caption table, worst first, paged")
    async def review(request: Request) -> Any:
        svc, data, p = await folder_request(request, _REVIEW_FIELDS)
        rescan = _bool(data, "rescan", True)
        scores = _bool(data, "scores", True)
        model = _resolve_model(data.get("model"), current_default()) if scores else None
        grammar = _str(data, "grammar", "bundled")
        if grammar not in ("bundled", "none"):
            raise OptionError("grammar", grammar, "must be 'bundled' or 'none' over the API")
        prefix = _str(data, "clip_prefix", "")
        sort = _str(data, "sort", "clip")
        descending = _bool(data, "descending", False)
        flags = _strings(data, "flags") or []
        text, regex = _str(data, "text"), _bool(data, "regex", False)
        lo, hi = _num(data, "min_score"), _num(data, "max_score")
        score_name = _str(data, "score", "clip")
        offset = _int(data, "offset", 0, 0)
        limit = _int(data, "limit", 100, 1, _MAX_LIMIT)
        tag_filter = check_tags("tag", data.get("tag"))
        vocab = run(lambda: svc.tag_vocabulary(data.get("tag_vocabulary", DEFAULT_VOCABULARY)))

        def work() -> dict[str, Any]:
            from .table import filter_rows, sort_rows

            table = svc.table(p, rescan=rescan)
            stats = None
            wanted = {"model": model, "grammar": grammar, "prefix": prefix, "tags": vocab}
            done = table.scoring and {k: table.scoring.get(k) for k in wanted} == wanted
            if scores and (rescan or not done):
                stats = svc.score(table, model, grammar=grammar, prefix=prefix, tags=vocab)
            elif scores:  # the kept scan: score only rows a rescan or an edit left without scores (cheap: cached)
                pending = [r for r in table.rows if r.scored_text and r.scored_text.strip() and r.clip_score is None
                           and not r.error]
                if pending:
                    stats = svc.score(table, model, grammar=grammar, prefix=prefix, rows=pending, tags=vocab)
            rows = sort_rows(filter_rows(table.rows, flags=flags, text=text, regex=regex, min_score=lo, max_score=hi,
                                         score=score_name, tags=tag_filter), sort, descending=descending)
            return {"folder": table.folder, "total": len(rows), "offset": offset, "limit": limit, "sort": sort,
                    "summary": table.summary(), "triggers": table.triggers, "model": model,
                    "grammar": bool(table.scoring and table.scoring.get("has_grammar")),
                    "undo_depth": undo_depth(table), "scoring": stats, "tag_vocabulary": vocab,
                    "tag_counts": tag_counts(table.rows),
                    "failures": [{"path": f.path, "reason": f.reason} for f in table.failures],
                    "rows": [r.to_dict() for r in rows[offset:offset + limit]]}

        return await run_in_threadpool(run, work)

    @router.put("/review/caption", summary="Save one caption (atomic, journaled, undoable)")
    async def save_caption(request: Request) -> Any:
        svc, data, p = await folder_request(request, _SCAN_FIELDS + ["image", "caption", "rescore", "keep_triggers"])
        image = _str(data, "image")
        if not image:
            raise OptionError("image", image, "is required: the image whose caption to save (a path in the folder)")
        if "caption" not in data or not isinstance(data["caption"], str):
            raise ApiError(422, "invalid_caption", "caption is required and must be a string", field="caption")
        caption = data["caption"]
        rescore = _bool(data, "rescore", True)
        keep = _bool(data, "keep_triggers", True)

        def work() -> dict[str, Any]:
            from .flags import check_caption_text

            check_caption_text(caption)  # before anything is scanned or locked
            table = svc.table(p)
            try:
                row = svc.image_row(table, image)
            except KeyError:
                table = svc.table(p, rescan=True)  # a file added since the last scan
                try:
                    row = svc.image_row(table, image)
                except KeyError:
                    raise UnknownImageError(f"{image} is not an image of the reviewed folder {table.folder}") from None
            out = svc.save(table, [(row.image, caption)], rescore=rescore, keep_triggers=keep)[0]
            if out.status == "failed":
                raise ApiError(500, "write_failed", f"{row.caption_file}: {out.reason}")
            return {"status": out.status, "row": row.to_dict(), "undo_depth": undo_depth(table)}

        return await run_in_threadpool(run, work)

    @router.post("/review/undo", summary="Undo the last caption save in a folder")
    async def undo(request: Request) -> Any:
        svc, data, p = await folder_request(request, _SCAN_FIELDS)

        def work() -> dict[str, Any]:
            table = svc.table(p)
            out = svc.undo(table)
            by_image = {r.image: r for r in table.rows}
            return {"undone": [{"image": o.image, "caption_file": o.caption_file, "status": o.status,
                                "reason": o.reason or None} for o in out],
                    "rows": [by_image[o.image].to_dict() for o in out if o.image in by_image],
                    "undo_depth": undo_depth(table)}

        return await run_in_threadpool(run, work)

    @router.post("/review/tags", summary="Add / remove tags across images (one atomic, journaled, undoable save)")
    async def edit_tags(request: Request) -> Any:
        svc, data, p = await folder_request(request, _TAGS_FIELDS)
        images = _strings(data, "images")
        if not images or any(not s.strip() for s in images):
            raise OptionError("images", data.get("images"), "is required: the images (paths in the folder) whose "
                              "tags to change, a non-empty list of strings")
        add, remove = check_tags("add", data.get("add")), check_tags("remove", data.get("remove"))
        if not add and not remove:
            raise OptionError("add", data.get("add"), "give a tag to add (add) or to remove (remove)")
        rescore = _bool(data, "rescore", True)
        dry_run = _bool(data, "dry_run", False)

        def work() -> dict[str, Any]:
            table = svc.table(p)
            try:
                for image in images:
                    svc.image_row(table, image)
            except KeyError:
                table = svc.table(p, rescan=True)  # a file added since the last scan
            plan, out = svc.edit_tags(table, images, add=add, remove=remove, rescore=rescore, dry_run=dry_run)
            failed = [o for o in out if o.status == "failed"]
            if failed and len(failed) == len(out):
                raise ApiError(500, "write_failed", f"{failed[0].caption_file}: {failed[0].reason}")
            return {"dry_run": dry_run, "changed": len(plan) if dry_run else sum(o.status == "saved" for o in out),
                    "files": [{"image": r.image, "caption_file": r.caption_file, "caption": text,
                               "status": "planned" if dry_run else next((o.status for o in out if o.image == r.image),
                                                                        "unchanged"),
                               "reason": next((o.reason or None for o in out if o.image == r.image), None)}
                              for r, text in plan],
                    "rows": [svc.image_row(table, i).to_dict() for i in dict.fromkeys(images)],
                    "undo_depth": undo_depth(table)}

        return await run_in_threadpool(run, work)
