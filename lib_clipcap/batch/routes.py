"""HTTP routes of batch tagging under ``/clipcap/v1``: start a job, follow it, cancel it; list and undo a folder's runs.

- ``POST /batch``: body ``{"model": ..., TagOptions' fields, the decoding options}`` -> 202 ``{"id": ...}``. Every
  value is checked by :class:`~lib_clipcap.batch.options.TagOptions` (422 naming the field); a path outside the
  allowed folders is 403, a missing one 404; the job runs on the job manager's thread.
- ``GET /batch/{id}``: the job's progress and results (:meth:`JobManager.status <lib_clipcap.batch.jobs.JobManager.
  status>`); ``DELETE /batch/{id}``: cancel it (it stops after the current batch), answered with its status.
- ``POST /batch/runs``: ``{"folder"}`` -> ``{"runs": [...]}``, the runs recorded in the folder, oldest first.
- ``POST /batch/undo``: ``{"folder", "run"}`` -> what undoing the run (default: the newest) restored, removed or left
  alone (:mod:`lib_clipcap.batch.runs`); 409 while a job holds the folder.

Only the folders the job manager allows; without one every route answers 503 with the host's message.
"""

# No ``from __future__ import annotations``: FastAPI 0.94 (A1111) resolves route annotations at creation.

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..errors import ClipCapError, MissingFileError
from .errors import BatchLockedError
from .options import TagOptions
from .runs import RunNotFoundError

__all__ = ["BatchStarted", "add_batch_routes"]

_BODY_LIMIT = 64 * 1024  # a folder request: {"folder", "run"}
_START_LIMIT = 16 * _BODY_LIMIT  # a job's options may carry long lists (inputs, replace, banned_words)


class BatchStarted(BaseModel):
    id: str


def _tag_options_fields(cls: Any) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]


def _jsonable_status(status: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        status = dataclasses.asdict(status)
    if not isinstance(status, dict):
        status = {"status": status}
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(status)


def add_batch_routes(router: APIRouter, manager: Any, job_manager: Any, current_default: Callable[[], str],
                     unavailable: str, *, read_json: Callable[..., Awaitable[dict[str, Any]]], api_error: type,
                     check_fields: Callable[[dict[str, Any], list[str]], None],
                     resolve_model: Callable[[Any, str], str], responses: dict[Any, Any]) -> None:
    """Add the batch routes to the ``/clipcap/v1`` router (called by ``api.create_router``).

    The API's helpers (body reader, error class, field and model checks) are handed in rather than imported: the API
    module imports this one, and batch tagging sits below the app layer.

    Args:
        router: The API router (its route class answers errors as JSON).
        manager: The model manager (the job manager runs the jobs through it).
        job_manager: A :class:`~lib_clipcap.batch.jobs.JobManager` (or a scope of one); ``None``: every route
            answers 503 with ``unavailable``.
        current_default: The server's default model name (a job that names no model uses it).
        unavailable: The 503 message when ``job_manager`` is ``None``: it names the setting that allows folders.
        read_json: The API's body reader (``read_json(request, limit)``: JSON objects only, size-limited).
        api_error: The API's error class (``api_error(status, type, message, **extra)``), which its route class
            answers as a JSON error body.
        check_fields: The API's unknown-field check (``check_fields(data, allowed)``: 422 naming the first unknown
            field and its value).
        resolve_model: The API's model-name rule (``resolve_model(name, default)``: 422 for a non-string, 404
            listing the valid names for an unknown one).
        responses: The API's documented error responses, for the OpenAPI schema.
    """
    ApiError = api_error  # noqa: N806 - used as the class it is

    def require_jobs() -> Any:
        if job_manager is None:
            raise ApiError(503, "batch_unavailable", unavailable)
        return job_manager

    def job_status(job_id: str) -> dict[str, Any]:
        jobs = require_jobs()
        try:
            status = jobs.status(job_id)
        except KeyError:
            raise ApiError(404, "unknown_job", f"no batch job {job_id!r}") from None
        return _jsonable_status(status)

    @router.post("/batch", status_code=202, response_model=BatchStarted, responses=responses,
                 summary="Start a batch-tagging job (fields: model, the decoding options, and TagOptions' fields)")
    async def batch_start(request: Request) -> Any:
        jobs = require_jobs()
        data = await read_json(request, _START_LIMIT)
        allowed = ["model"] + _tag_options_fields(TagOptions)
        check_fields(data, allowed)
        model = resolve_model(data.get("model"), current_default())
        values = {k: v for k, v in data.items() if k != "model"}
        try:  # TagOptions checks every value (decoding ones with the options table) -> OptionError -> 422
            options = TagOptions(**values)
        except (TypeError, ValueError) as e:
            if isinstance(e, ClipCapError):
                raise
            raise ApiError(422, "invalid_option", f"invalid batch options: {e}") from None
        try:
            job_id = await run_in_threadpool(jobs.start, options, model)
        except PermissionError as e:  # a path outside the allowed folders
            raise ApiError(403, "forbidden_path", str(e)) from None
        except (FileNotFoundError, NotADirectoryError) as e:
            if isinstance(e, MissingFileError):  # model files: 503 as everywhere
                raise
            raise ApiError(404, "folder_not_found", str(e)) from None
        return {"id": str(job_id)}

    async def folder_call(request: Request, fields: list[str], call: Callable[[Any, dict[str, Any]], Any]) -> Any:
        # JSON bodies only (read_json: 415 otherwise) and the router's origin check, as every other route: undo
        # writes files, so it must never be reachable from a cross-site form post.
        jobs = require_jobs()
        data = await read_json(request, _BODY_LIMIT)
        check_fields(data, fields)
        try:
            return await run_in_threadpool(call, jobs, data)
        except PermissionError as e:  # outside the allowed folders
            raise ApiError(403, "forbidden_path", str(e)) from None
        except RunNotFoundError as e:
            raise ApiError(404, "unknown_run", str(e)) from None
        except BatchLockedError as e:
            raise ApiError(409, "folder_busy", str(e)) from None
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ApiError(404, "folder_not_found", str(e)) from None

    @router.post("/batch/runs", responses=responses,
                 summary="List the batch runs recorded for a folder (body: {\"folder\"}), oldest first")
    async def batch_runs(request: Request) -> Any:
        return _jsonable_status({"runs": await folder_call(request, ["folder"],
                                                           lambda jobs, d: jobs.runs(d.get("folder")))})

    @router.post("/batch/undo", responses=responses,
                 summary="Undo a batch run of a folder (body: {\"folder\", \"run\"}; run: default the newest)")
    async def batch_undo(request: Request) -> Any:
        return _jsonable_status(await folder_call(request, ["folder", "run"],
                                                  lambda jobs, d: jobs.undo(d.get("folder"), d.get("run"))))

    @router.get("/batch/{job_id}", responses=responses, summary="Progress and results of a batch job")
    def batch_status(job_id: str) -> Any:
        return job_status(job_id)

    @router.delete("/batch/{job_id}", responses=responses, summary="Cancel a batch job")
    def batch_cancel(job_id: str) -> Any:
        jobs = require_jobs()
        try:
            jobs.cancel(job_id)
        except KeyError:
            raise ApiError(404, "unknown_job", f"no batch job {job_id!r}") from None
        return job_status(job_id)
