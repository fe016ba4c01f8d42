"""The "Review" section of the captioning UI (standalone server and WebUI tab alike): worst captions first, fix them.

A gallery of the folder's images with their captions, worst first (CLIP-S, grammar, RefCLIP-S, length); filters by
flag, text or regular expression and score range; the selected image with its caption in an editable box, saved
atomically through the batch writer and journal, undo of the last saves; "recaption" with the model and decoding
options of the panel above, candidates side by side with the current caption (with their CLIP-S) to pick from; bulk
find/replace and prefix (trigger word) with a preview of how many files change, on the whole folder, the filtered view
or only the images ticked. Tag captions (kohya style: ``sks, red, triangle``): each tag with its CLIP-S against the
image beside the caption, lowest first, the ones the image disagrees with flagged (:mod:`lib_clipcap.review.tags`);
a "Has tags" filter; "tags the image disagrees with" as a sort (``tags``); tags added to or removed from the same
scopes as the bulk edit, as one undoable save. Keyboard: Alt+→ / Alt+← next and previous image (also → / ← outside
text boxes), Ctrl+S (⌘S) save, while the pointer or focus is in the section.

Trigger words (given in the "Trigger words" box, else detected) are shown apart and never scored; the caption box
holds the caption's body, and every save (an edit, a candidate, a bulk edit) puts the row's triggers first again, once
(:mod:`lib_clipcap.review.triggers`). The gallery pages through the whole view (``PAGE_SIZE`` images a page), with a
list of the page's rows whose full labels show on hover. A save refused (e.g. for a line break) keeps the typed text.

It uses the folders batch tagging may use (the job manager's), and says so when there are none.
:class:`ReviewUI` holds the handlers (plain values in and out, testable without a browser);
:func:`build_review_section` lays out the gradio components.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["GALLERY_LIMIT", "OUTPUTS", "PAGE_SIZE", "SCOPES", "ReviewUI", "build_review_section"]

#: Images shown in the gallery at once: one page of the current view; the page buttons walk the whole view, and
#: next/previous (the selected image) walk it too.
PAGE_SIZE = 60
GALLERY_LIMIT = PAGE_SIZE  # the older name
#: What a bulk edit applies to.
SCOPES = ("whole folder", "this view", "selected")
#: The outputs of the handlers that refresh the whole section, in order.
OUTPUTS = ("state", "gallery", "summary", "preview", "info", "caption", "status", "position", "page_list", "picked")
_THUMB = 192

# Installs the section's keyboard shortcuts once per page. Gradio puts the app in a shadow root in some versions
# (and A1111's gradioApp() looks there too), so buttons are searched in the app's root.
KEYS_JS = """
() => {
  if (window.__clipcapReviewKeys) { return []; }
  window.__clipcapReviewKeys = true;
  const root = () => { const app = document.querySelector('gradio-app'); return (app && app.shadowRoot) || document; };
  const click = (id) => { const b = root().querySelector('#' + id); if (b) { b.click(); } };
  const inSection = (el) => { const s = root().querySelector('#clipcap_review'); return s && el && s.contains(el); };
  let hovered = false;
  document.addEventListener('mouseover', (e) => { hovered = inSection(e.composedPath()[0]); }, true);
  document.addEventListener('keydown', (e) => {
    const target = e.composedPath()[0];
    if (!(inSection(target) || hovered)) { return; }
    const typing = target && (target.tagName === 'TEXTAREA' || target.tagName === 'INPUT');
    if ((e.ctrlKey || e.metaKey) && (e.key === 's' || e.key === 'S')) {
      e.preventDefault(); click('clipcap_review_save');
    } else if (e.key === 'ArrowRight' && (e.altKey || !typing)) {
      e.preventDefault(); click('clipcap_review_next');
    } else if (e.key === 'ArrowLeft' && (e.altKey || !typing)) {
      e.preventDefault(); click('clipcap_review_prev');
    }
  }, true);
  // Full labels on hover: gallery captions are cut to the thumbnail's width; their title holds the whole text.
  const titles = () => {
    const g = root().querySelector('#clipcap_review_gallery');
    if (!g) { return; }
    g.querySelectorAll('[class*="caption"]').forEach((el) => {
      const t = el.textContent.trim();
      if (t && el.getAttribute('title') !== t) { el.setAttribute('title', t); }
    });
  };
  new MutationObserver(titles).observe(root(), {subtree: true, childList: true, characterData: true});
  return [];
}
"""


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _bound(name: str, value: Any) -> float | None:
    """A score bound typed in a text box: empty means none."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number; type a number such as 0.5, or leave it empty") from None



def _preview(make_plan: Any, scope: str | None) -> str:
    """The preview text of the ``(table, rows, plan)`` that ``make_plan()`` returns: how many caption files would
    change in ``scope``, with three examples; the error, if planning fails. Nothing is written."""
    try:
        table, rows, plan = make_plan()
    except Exception as e:  # noqa: BLE001 - shown in the status box
        return _error_text(e)
    if not plan:
        return "No caption file would change."
    examples = "\n".join(f"- `{r.rel}`: {(r.caption or '(none)')[:60]} → **{t[:60]}**" for r, t in plan[:3])
    of = f"of {len(rows)}" + ("" if len(rows) == len(table.rows) else f" {scope or SCOPES[0]}")
    return f"**{len(plan)} caption file{'s' if len(plan) != 1 else ''} would change** ({of}):\n\n{examples}"

def _error_text(e: BaseException) -> str:
    from ..errors import ClipCapError, error_markdown

    # review reads the user's folders: a file error or a bad typed value is the user's to fix, not a bug
    return error_markdown(e, expected=(ClipCapError, OSError, KeyError, ValueError), log=log)


class ReviewUI:
    """State and handlers of the Review section; the per-browser state is a dict (``gr.State``):
    ``{"params", "order" (image paths of the current view, worst first), "index" (the selected one)}``.

    Args:
        manager: The model manager (scores and recaptions go through it).
        job_manager: Batch tagging's job manager: its folders (and caption suffixes) are the ones Review may use;
            ``None``: the section says it is unavailable.
        unavailable: Why batch tagging is unavailable (shown when ``job_manager`` is ``None``).
    """

    def __init__(self, manager: Any, *, job_manager: Any = None, unavailable: str | None = None) -> None:
        self.manager = manager
        self.job_manager = job_manager
        self.unavailable_text = unavailable
        self._service: Any = None
        self._thumbs: dict[tuple[str, int, int], Any] = {}

    # ---------------------------------------------------------------------------------------------- plumbing
    def unavailable(self) -> str | None:
        """Why Review cannot run here, or ``None``."""
        if self.job_manager is None:
            return ("Review uses the folders allowed for batch tagging. "
                    + (self.unavailable_text or "Batch tagging is not enabled here (the standalone server enables "
                                                "it with `--batch-root FOLDER`)."))
        return None

    @property
    def service(self) -> Any:
        if self._service is None:
            from .service import ReviewService

            self._service = ReviewService.for_jobs(self.manager, self.job_manager)
        return self._service

    def _table(self, state: dict[str, Any]) -> Any:
        if not state or state.get("params") is None:
            raise ValueError("scan a folder first")
        return self.service.table(state["params"])

    def thumbnail(self, path: str) -> Any:
        """A small RGB copy of an image for the gallery (grey when it cannot be read), cached per file version."""
        from PIL import Image

        try:
            st = os.stat(path)
            key = (path, st.st_size, st.st_mtime_ns)
        except OSError:
            key = (path, -1, -1)
        if key not in self._thumbs:
            from ..images import try_load_image

            image, _ = try_load_image(path)
            if image is None:
                image = Image.new("RGB", (_THUMB, _THUMB), (128, 128, 128))
            image = image.convert("RGB")
            image.thumbnail((_THUMB, _THUMB))
            if len(self._thumbs) > 4 * GALLERY_LIMIT:
                self._thumbs.clear()
            self._thumbs[key] = image
        return self._thumbs[key]

    # --------------------------------------------------------------------------------------------------- views
    def _view(self, table: Any, sort: str, flags: Sequence[str], text: str, regex: bool, lo: Any, hi: Any,
              score: str = "clip", tags: Any = "") -> list[Any]:
        from .table import filter_rows, sort_rows
        from .tags import check_tags

        lo, hi = _bound("min score", lo), _bound("max score", hi)
        rows = filter_rows(table.rows, flags=list(flags or []), text=text or None, regex=bool(regex), min_score=lo,
                           max_score=hi, score=score if score in ("clip", "grammar", "ref", "tags") else "clip",
                           tags=check_tags("has tags", tags or None))
        return sort_rows(rows, sort or "clip")

    @staticmethod
    def _page(state: dict[str, Any]) -> tuple[int, int, int, int]:
        """``(page, pages, start, end)`` of the view's current page (``start``/``end``: row indices, end excluded)."""
        n = len(state.get("order") or [])
        pages = max(1, -(-n // PAGE_SIZE))
        page = max(0, min(int(state.get("page", 0) or 0), pages - 1))
        state["page"] = page
        return page, pages, page * PAGE_SIZE, min(n, (page + 1) * PAGE_SIZE)

    @staticmethod
    def _label(r: Any, pos: int | None = None) -> str:
        """A row's full label: position, path, scores, flags, trigger words (apart), caption body."""
        body = "(no caption file)" if r.caption is None else (r.body if r.body is not None else r.caption)
        return ((f"{pos}. " if pos is not None else "") + f"{r.rel} · CLIP-S {_fmt(r.clip_score)} · grammar "
                f"{_fmt(r.grammar)}" + (f" · lowest tag {_fmt(r.tag_min)}" if r.tag_scores else "")
                + (f" · [{', '.join(r.flags)}]" if r.flags else "")
                + (f" · trigger: {', '.join(r.triggers)}" if r.triggers else "") + f" · {body}")

    def _page_rows(self, table: Any, state: dict[str, Any]) -> list[tuple[int, Any]]:
        order = state.get("order") or []
        _, _, start, end = self._page(state)
        out = []
        for i in range(start, end):
            try:
                out.append((i, table.row(order[i])))
            except KeyError:
                continue
        return out

    def _gallery(self, table: Any, state: dict[str, Any]) -> list[tuple[Any, str]]:
        out = []
        for _, r in self._page_rows(table, state):
            body = "(no caption file)" if r.caption is None else (r.body if r.body is not None else r.caption)
            flags = f" [{', '.join(r.flags)}]" if r.flags else ""
            trig = f" ‹{', '.join(r.triggers)}›" if r.triggers else ""
            # The whole text: the gallery cuts it to the thumbnail's width, its title (see KEYS_JS) shows it all.
            out.append((self.thumbnail(r.image), f"{_fmt(r.clip_score)}{flags}{trig} {body}"))
        return out

    def _page_list(self, table: Any, state: dict[str, Any]) -> str:
        """The page's rows as an HTML list, one line each (cut with an ellipsis), the full label as its title."""
        import html

        items = []
        for i, r in self._page_rows(table, state):
            label = html.escape(self._label(r, i + 1), quote=True)
            items.append(f'<li title="{label}" data-row="{i + 1}" style="white-space:nowrap;overflow:hidden;'
                         f'text-overflow:ellipsis">{label}</li>')
        if not items:
            return ""
        return (f'<ol class="clipcap-review-rows" start="{self._page(state)[2] + 1}" style="max-height:16em;'
                f'overflow-y:auto;margin:0;font-size:90%">' + "".join(items) + "</ol>")

    def _position(self, state: dict[str, Any]) -> str:
        n = len(state.get("order") or [])
        picked = len(state.get("selected") or [])
        if not n:
            return "No rows in this view." + (f" {picked} selected." if picked else "")
        page, pages, start, end = self._page(state)
        return f"Rows {start + 1}–{end} of {n} · page {page + 1} / {pages} · {picked} selected"

    def _picked(self, table: Any, state: dict[str, Any]) -> Any:
        """The tick boxes of the page's images (values: their paths in the folder), ticked where selected."""
        from .. import compat

        chosen = set(state.get("selected") or [])
        rows = [r for _, r in self._page_rows(table, state)]
        return compat.update(choices=[r.rel for r in rows], value=[r.rel for r in rows if r.image in chosen])

    def _summary(self, table: Any, state: dict[str, Any]) -> str:
        s = table.summary()
        order = state.get("order") or []
        flagged = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.items() if k != "rows" and v)
        _, _, start, end = self._page(state)
        trig = ""
        if table.triggers:
            trig = (f"; trigger{'s' if len(table.triggers) > 1 else ''} "
                    f"({'given' if table.triggers_given else 'detected'}, kept, not scored): "
                    f"`{', '.join(table.triggers)}`")
        shown = f"rows {start + 1}–{end} of {len(order)}" if order else f"none of {len(order)}"
        text = (f"**{s['rows']} images** in `{table.folder}`; flags: {flagged or 'none'}{trig}"
                f". Showing {shown} in this view, worst first.")
        sc = getattr(table, "scoring", None)
        if sc:
            text += f" Scores: CLIP-S with {sc['model']}'s CLIP" + (", grammar head" if sc.get("has_grammar") else "")
        return text

    def preview(self, path: str) -> Any:
        """The selected image, at most 768 pixels wide/high (a PIL image: hosts serve no files from the dataset)."""
        from ..images import try_load_image

        image, _ = try_load_image(path)
        if image is None:
            return None
        image = image.convert("RGB")
        image.thumbnail((768, 768))
        return image

    def _selected(self, table: Any, state: dict[str, Any]) -> tuple[Any, str, str]:
        """``(preview image or None, info markdown, caption body)`` of the selected row."""
        order = state.get("order") or []
        if not order:
            return None, "Nothing selected (the view is empty).", ""
        i = max(0, min(int(state.get("index", 0)), len(order) - 1))
        state["index"] = i
        try:
            r = table.row(order[i])
        except KeyError:
            return None, "That image is no longer in the folder; scan again.", ""
        keep = table.row_triggers(r)
        info = (f"**{i + 1} / {len(order)}** `{r.rel}` · CLIP-S {_fmt(r.clip_score)} · grammar {_fmt(r.grammar)}"
                + (f" · RefCLIP-S {_fmt(r.ref_clip_score)}" if r.ref_caption else "")
                + f" · {r.tokens if r.tokens is not None else 0} tokens"
                + (f" · flags: {', '.join(r.flags)}" if r.flags else "")
                + (f"\n\nTrigger words (kept first on save, not scored): `{', '.join(keep)}`" if keep else "")
                + self._tags_text(r)
                + "".join(f"\n\n⚠ {e}" for e in (r.error, r.caption_error) if e)
                + f"\n\nCaption file: `{r.caption_file}`")
        body = r.body if r.body is not None else (r.caption or "")
        return self.preview(r.image), info, body

    @staticmethod
    def _tags_text(r: Any) -> str:
        """The row's tags with their scores, lowest first; ⚠ where the image disagrees (``better``: what it shows)."""
        if not r.tags:
            return ""
        if not r.tag_scores:
            return "\n\nTags (not scored): " + ", ".join(f"`{t}`" for t in r.tags)
        parts = []
        for d in r.tag_scores:
            warn = " ⚠" + (f" (image: `{d['better']}`)" if d.get("better") else "") if d.get("flagged") else ""
            parts.append(f"`{d['tag']}` {_fmt(d['score'])}{warn}")
        return "\n\nTags, lowest CLIP-S first: " + " · ".join(parts)

    def _outputs(self, table: Any, state: dict[str, Any], status: str, *, caption: str | None = None) -> tuple:
        """The section's :data:`OUTPUTS`; ``caption``: what the caption box shows instead of the selected row's body
        (the text a refused save was given, so that nothing typed is lost)."""
        preview, info, body = self._selected(table, state)
        return (state, self._gallery(table, state), self._summary(table, state), preview, info,
                body if caption is None else caption, status, self._position(state), self._page_list(table, state),
                self._picked(table, state))

    @staticmethod
    def _empty(state: dict[str, Any], status: str, *, caption: str = "") -> tuple:
        from .. import compat

        return (state or {}, [], "", None, "", caption, status, "", "", compat.update(choices=[], value=[]))

    # ------------------------------------------------------------------------------------------------ handlers
    def scan(self, folder: str, caption_ext: str, model: str, sort: str, flags: Sequence[str], text: str,
             regex: bool, lo: Any, hi: Any, state: dict[str, Any] | None = None, triggers: Any = "",
             tag_filter: Any = "", tag_vocabulary: str | None = "general") -> tuple:
        """Scan and score ``folder``; the outputs are :data:`OUTPUTS`. ``triggers``: trigger words (comma-separated
        text or a list; empty: detected). ``tag_filter``: only rows holding these tags (comma-separated);
        ``tag_vocabulary``: the tags' prompts and categories (a bundled name or a file; empty: no tag scores)."""
        import time

        from .triggers import parse_triggers

        state = dict(state or {})
        why = self.unavailable()
        if why:
            return self._empty(state, why)
        try:
            from ..registry import get_model

            params = self.service.params(folder, caption_ext=(caption_ext or ".txt").strip(),
                                         triggers=parse_triggers(triggers))
            t0 = time.perf_counter()
            table = self.service.table(params, rescan=True)
            stats = self.service.score(table, get_model(model).name, tags=tag_vocabulary or None)
            took = time.perf_counter() - t0
            state.update(params=params, order=[r.image for r in self._view(table, sort, flags, text, regex, lo, hi,
                                                                             tags=tag_filter)],
                         index=0, page=0, selected=[])
        except Exception as e:  # noqa: BLE001 - shown in the status line
            return self._empty(state, _error_text(e))
        status = (f"Scanned and scored {len(table.rows)} images in {took:.1f} s ({stats['images_encoded']} encoded, "
                  f"{stats['images_cached']} from the cache).")
        for f in table.failures[:5]:
            status += f"\n\nLeft out: {f}"
        return self._outputs(table, state, status)

    def refilter(self, sort: str, flags: Sequence[str], text: str, regex: bool, lo: Any, hi: Any,
                 state: dict[str, Any], tag_filter: Any = "") -> tuple:
        """Apply the sort and filters to the scanned table (no rescan); the selection keeps what is still in view.
        ``tag_filter``: only rows holding these tags (comma-separated)."""
        try:
            table = self._table(state)
            order = [r.image for r in self._view(table, sort, flags, text, regex, lo, hi, tags=tag_filter)]
            seen = set(order)
            state = dict(state, order=order, index=0, page=0,
                         selected=[i for i in state.get("selected") or [] if i in seen])
        except Exception as e:  # noqa: BLE001
            return self._empty(state, _error_text(e))
        return self._outputs(table, state, f"{len(state['order'])} images in this view.")

    def page(self, delta: int, state: dict[str, Any], *, absolute: int | None = None) -> tuple:
        """Show another page of the view (``delta`` pages on, or page ``absolute``, 0-based); its first image is
        selected. Outputs :data:`OUTPUTS`."""
        try:
            table = self._table(state)
        except Exception as e:  # noqa: BLE001
            return self._empty(state, _error_text(e))
        state = dict(state)
        page, pages, _, _ = self._page(state)
        state["page"] = max(0, min(pages - 1, absolute if absolute is not None else page + int(delta)))
        state["index"] = self._page(state)[2]
        return self._outputs(table, state, self._position(state))

    def goto(self, value: Any, state: dict[str, Any]) -> tuple:
        """Show the page holding row ``value`` (1-based, as the list numbers them)."""
        try:
            row = int(str(value).strip())
        except ValueError:
            return self.page(0, state)
        return self.page(0, state, absolute=max(0, row - 1) // PAGE_SIZE)

    def pick(self, values: Sequence[str], state: dict[str, Any]) -> tuple:
        """The page's tick boxes changed: the selection holds the ticked images of this page and the selected images
        of the other pages. Outputs ``(state, position)``."""
        try:
            table = self._table(state)
        except Exception as e:  # noqa: BLE001
            return state, _error_text(e)
        state = dict(state)
        page = {r.image for _, r in self._page_rows(table, state)}
        by_rel = {r.rel: r.image for _, r in self._page_rows(table, state)}
        ticked = [by_rel[v] for v in values or [] if v in by_rel]
        state["selected"] = [i for i in state.get("selected") or [] if i not in page] + ticked
        return state, self._position(state)

    def select_rows(self, which: str, state: dict[str, Any]) -> tuple:
        """``which``: ``"page"`` (add this page's images to the selection), ``"view"`` (every image of the view) or
        ``"none"`` (clear it). Outputs ``(state, position, picked)``."""
        from .. import compat

        try:
            table = self._table(state)
        except Exception as e:  # noqa: BLE001
            return state, _error_text(e), compat.update()
        state = dict(state)
        chosen = list(state.get("selected") or [])
        if which == "none":
            chosen = []
        else:
            add = [r.image for _, r in self._page_rows(table, state)] if which == "page" else \
                list(state.get("order") or [])
            chosen = list(dict.fromkeys(chosen + add))
        state["selected"] = chosen
        return state, self._position(state), self._picked(table, state)

    def select(self, index: int, state: dict[str, Any]) -> tuple:
        """Select the ``index``-th image of the gallery's page (a gallery click)."""
        st = dict(state or {})
        start = self._page(st)[2] if st.get("order") else 0
        return self.step(0, st, absolute=start + int(index))

    def step(self, delta: int, state: dict[str, Any], *, absolute: int | None = None) -> tuple:
        """Move the selection by ``delta`` (next: 1, previous: -1); outputs ``(state, preview, info, caption)``."""
        try:
            table = self._table(state)
        except Exception as e:  # noqa: BLE001
            return state, None, _error_text(e), ""
        n = len(state.get("order") or [])
        state = dict(state)
        if n:
            state["index"] = absolute if absolute is not None else (int(state.get("index", 0)) + delta) % n
        preview, info, caption = self._selected(table, state)
        return state, preview, info, caption

    def save(self, text: str, state: dict[str, Any]) -> tuple:
        """Save the edited caption of the selected image (atomically, journaled, undoable) and rescore it.

        ``text`` is the caption's body (or the whole caption): the row's trigger words go first, once. A refused
        save (a line break, a control character...) says why and leaves ``text`` in the caption box.
        """
        typed = text if text is not None else ""
        try:
            table = self._table(state)
            order = state.get("order") or []
            if not order:
                raise ValueError("no image is selected")
            image = order[int(state.get("index", 0))]
            out = self.service.save(table, [(image, typed)])[0]
        except Exception as e:  # noqa: BLE001
            try:
                return self._outputs(self._table(state), state, _error_text(e), caption=typed)
            except Exception:  # noqa: BLE001
                return self._empty(state, _error_text(e), caption=typed)
        if out.status == "failed":
            return self._outputs(table, state, f"Not saved: {out.reason}", caption=typed)
        status = {"saved": "Saved", "unchanged": "No change"}.get(out.status, f"Not saved: {out.reason}")
        return self._outputs(table, state, f"{status}: `{out.caption_file}`.")

    def undo(self, state: dict[str, Any]) -> tuple:
        """Undo the last save in the folder (an edit, or a whole bulk change)."""
        try:
            table = self._table(state)
            out = self.service.undo(table)
        except Exception as e:  # noqa: BLE001
            return self._empty(state, _error_text(e))
        if not out:
            return self._outputs(table, state, "Nothing to undo.")
        counts: dict[str, int] = {}
        for o in out:
            counts[o.status] = counts.get(o.status, 0) + 1
        return self._outputs(table, state, "Undone: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".")

    def recaption(self, model: str, state: dict[str, Any], *option_values: Any) -> tuple:
        """Caption the selected image with ``model`` and the panel's options; outputs ``(candidates radio update,
        markdown comparing them with the current caption)``. Candidates are bodies: taken and saved, they get the
        row's trigger words first; the current caption is compared (and scored) by its body too."""
        from .. import compat

        try:
            from ..options_table import caption_kwargs, decoding_options
            from ..registry import get_model

            table = self._table(state)
            order = state.get("order") or []
            if not order:
                raise ValueError("no image is selected")
            row = table.row(order[int(state.get("index", 0))])
            keys = [o.key for o in decoding_options()]
            kwargs = caption_kwargs(dict(zip(keys, option_values)))
            res = self.manager.caption(row.image, model=get_model(model).name, **kwargs)[0]
            if res.error:
                raise ValueError(res.error)
            from .triggers import split_triggers

            keep = table.row_triggers(row)
            texts = [split_triggers(c.text, keep)[1] if keep else c.text for c in res.candidates]
            texts = list(dict.fromkeys(t for t in texts if t.strip())) or [res.text]
            current = row.scored_text
            scores = self.service.score_texts(table, row, texts + ([current] if current else []))
        except Exception as e:  # noqa: BLE001
            return compat.update(choices=[], value=None), _error_text(e)
        lines = ["| | caption | CLIP-S |", "|---|---|---|"]
        if current:
            lines.append(f"| current | {current} | {_fmt(scores[-1])} |")
        for i, (t, s) in enumerate(zip(texts, scores)):
            lines.append(f"| {i + 1} | {t} | {_fmt(s)} |")
        if keep:
            lines.append(f"\nTrigger words kept first on save: `{', '.join(keep)}`")
        return compat.update(choices=texts, value=texts[0]), "\n".join(lines)

    def _bulk_rows(self, table: Any, state: dict[str, Any], scope: str | None) -> list[Any]:
        """The rows a bulk edit applies to: the whole folder, the filtered view, or the selected images."""
        scope = scope or SCOPES[0]
        if scope not in SCOPES:
            raise ValueError(f"apply to {scope!r}: choose one of {', '.join(SCOPES)}")
        if scope == "whole folder":
            return list(table.rows)
        images = state.get("order") if scope == "this view" else state.get("selected")
        if scope == "selected" and not images:
            raise ValueError("no image is selected: tick images under the gallery (or Select page / Select view)")
        out = []
        for image in images or []:
            try:
                out.append(table.row(image))
            except KeyError:
                continue
        return out

    def _plan(self, find: str, replace: str, regex: bool, prefix: str, state: dict[str, Any],
              scope: str | None) -> tuple[Any, list[Any], list[tuple[Any, str]]]:
        from .edits import plan_bulk

        table = self._table(state)
        rows = self._bulk_rows(table, state, scope)
        return table, rows, plan_bulk(rows, find=find or None, replace=replace or "", regex=bool(regex),
                                      prefix=prefix or None, table=table)

    def bulk_preview(self, find: str, replace: str, regex: bool, prefix: str, state: dict[str, Any],
                     scope: str | None = None) -> str:
        """How many caption files a bulk edit would change, with a few examples (nothing is written). ``scope``: one
        of :data:`SCOPES` (default: the whole folder)."""
        return _preview(lambda: self._plan(find, replace, regex, prefix, state, scope), scope)

    def bulk_apply(self, find: str, replace: str, regex: bool, prefix: str, state: dict[str, Any],
                   scope: str | None = None) -> tuple:
        """Apply a bulk edit (one undo step) to ``scope`` (see :meth:`bulk_preview`) and refresh the view."""
        return self._save_plan(lambda: self._plan(find, replace, regex, prefix, state, scope), state, "")

    def _save_plan(self, make_plan: Any, state: dict[str, Any], what: str) -> tuple:
        """Save the ``(table, rows, plan)`` that ``make_plan()`` returns as one undo step and refresh the view, with
        "Changed {what}N caption files" (and the failures) as the status."""
        try:
            table, _, plan = make_plan()
            out = self.service.save(table, [(r.image, t) for r, t in plan], keep_triggers=False) if plan else []
        except Exception as e:  # noqa: BLE001
            try:
                return self._outputs(self._table(state), state, _error_text(e))
            except Exception:  # noqa: BLE001
                return self._empty(state, _error_text(e))
        saved = sum(o.status == "saved" for o in out)
        failed = [o for o in out if o.status == "failed"]
        status = f"Changed {what}{saved} caption file{'s' if saved != 1 else ''}" + (
            f"; {len(failed)} failed: " + "; ".join(f"`{o.caption_file}`: {o.reason}" for o in failed[:3])
            if failed else "") + ". Undo reverts the whole change."
        return self._outputs(table, state, status)

    def _tag_plan(self, add: Any, remove: Any, state: dict[str, Any],
                  scope: str | None) -> tuple[Any, list[Any], list[tuple[Any, str]]]:
        from .edits import plan_tags
        from .tags import check_tags

        table = self._table(state)
        rows = self._bulk_rows(table, state, scope)
        return table, rows, plan_tags(rows, add=check_tags("add tags", add or None),
                                      remove=check_tags("remove tags", remove or None), table=table)

    def tags_preview(self, add: Any, remove: Any, state: dict[str, Any], scope: str | None = None) -> str:
        """How many caption files adding ``add`` and removing ``remove`` (comma-separated tags) would change in
        ``scope`` (see :data:`SCOPES`), with a few examples; nothing is written."""
        return _preview(lambda: self._tag_plan(add, remove, state, scope), scope)

    def tags_apply(self, add: Any, remove: Any, state: dict[str, Any], scope: str | None = None) -> tuple:
        """Add and remove tags across ``scope`` (one undoable save: triggers stay first, no tag twice) and refresh
        the view; outputs :data:`OUTPUTS`."""
        return self._save_plan(lambda: self._tag_plan(add, remove, state, scope), state, "the tags of ")


def build_review_section(manager: Any, *, job_manager: Any, model: Any, option_inputs: Sequence[Any],
                         unavailable: str | None = None) -> dict[str, Any]:
    """Lay out the Review section inside the current ``gr.Blocks`` (called by :func:`lib_clipcap.app.ui.build_ui`).

    Args:
        manager, job_manager, unavailable: As for :class:`ReviewUI`.
        model: The panel's model dropdown (scores use its CLIP; recaption uses the model).
        option_inputs: The panel's decoding-option components, in the options table's order (for recaption).

    Returns:
        The section's components by name, and the handlers under ``"ui"``.
    """
    import gradio as gr

    from .. import compat
    from .flags import FLAGS
    from .table import SORT_KEYS

    ui = ReviewUI(manager, job_manager=job_manager, unavailable=unavailable)
    why = ui.unavailable()
    c: dict[str, Any] = {"ui": ui}
    with gr.Accordion("Review", open=False, elem_id="clipcap_review"):
        compat.component(gr.Markdown, value=why or "See the worst captions of a tagged folder first (CLIP-S: how well "
                         "the caption matches the image; grammar: how well it reads), fix them in place. Keys: Alt+→ "
                         "/ Alt+← next / previous, Ctrl+S save.", elem_id="clipcap_review_info")
        state = gr.State({})
        with gr.Row():
            c["folder"] = compat.component(gr.Textbox, label="Folder", placeholder="/path/to/dataset", scale=4,
                                           elem_id="clipcap_review_folder", interactive=why is None)
            c["caption_ext"] = compat.component(gr.Textbox, label="Caption suffix", value=".txt", scale=1,
                                                elem_id="clipcap_review_ext", interactive=why is None)
            c["triggers"] = compat.component(gr.Textbox, label="Trigger words", placeholder="detected (or: sks, ohwx)",
                                             scale=1, elem_id="clipcap_review_triggers", interactive=why is None,
                                             info="kept first in every caption, never scored")
            c["tag_vocabulary"] = compat.component(gr.Textbox, label="Tag vocabulary", value="general", scale=1,
                                                   elem_id="clipcap_review_tag_vocabulary", interactive=why is None,
                                                   info="prompts of tag scores (name or file; empty: none)")
            c["scan"] = compat.component(gr.Button, value="Scan", variant="primary", scale=1,
                                         elem_id="clipcap_review_scan", interactive=why is None)
        with gr.Row():
            c["sort"] = compat.component(gr.Dropdown, choices=list(SORT_KEYS), value="clip", label="Worst first by",
                                         elem_id="clipcap_review_sort")
            c["flags"] = compat.component(gr.Dropdown, choices=list(FLAGS) + ["any", "none"], value=[],
                                          multiselect=True, label="Flags", elem_id="clipcap_review_flags")
            c["text"] = compat.component(gr.Textbox, label="Caption contains", elem_id="clipcap_review_text")
            c["regex"] = compat.component(gr.Checkbox, label="Regular expression", value=False,
                                          elem_id="clipcap_review_regex")
            # Text boxes, not gr.Number: an empty number box reads as 0 in some gradio versions, and 0 is a bound.
            c["min"] = compat.component(gr.Textbox, label="Min score", placeholder="none",
                                        elem_id="clipcap_review_min")
            c["max"] = compat.component(gr.Textbox, label="Max score", placeholder="none",
                                        elem_id="clipcap_review_max")
            c["tag_filter"] = compat.component(gr.Textbox, label="Has tags", placeholder="e.g. red, circle",
                                               elem_id="clipcap_review_tag_filter")
        c["summary"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_summary")
        c["gallery"] = compat.component(gr.Gallery, label="Images, in the chosen order", columns=6, height=420,
                                        allow_preview=False, elem_id="clipcap_review_gallery", show_label=True)
        with gr.Row():
            c["prev_page"] = compat.component(gr.Button, value="« Previous page", scale=1,
                                              elem_id="clipcap_review_prev_page")
            c["position"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_position")
            c["goto"] = compat.component(gr.Textbox, label="Go to row", placeholder="e.g. 121", scale=1,
                                         elem_id="clipcap_review_goto")
            c["next_page"] = compat.component(gr.Button, value="Next page »", scale=1,
                                              elem_id="clipcap_review_next_page")
        with gr.Accordion("This page as a list (full labels on hover), select for bulk edit", open=False,
                          elem_id="clipcap_review_rows"):
            c["page_list"] = compat.component(gr.HTML, value="", elem_id="clipcap_review_page_list")
            c["picked"] = compat.component(gr.CheckboxGroup, choices=[], value=[], label="Selected on this page",
                                           elem_id="clipcap_review_picked")
            with gr.Row():
                c["pick_page"] = compat.component(gr.Button, value="Select page", elem_id="clipcap_review_pick_page")
                c["pick_view"] = compat.component(gr.Button, value="Select whole view",
                                                  elem_id="clipcap_review_pick_view")
                c["pick_none"] = compat.component(gr.Button, value="Clear selection",
                                                  elem_id="clipcap_review_pick_none")
        with gr.Row():
            with gr.Column(scale=1):
                c["preview"] = compat.component(gr.Image, label="Selected", type="pil", interactive=False,
                                                height=300, elem_id="clipcap_review_preview")
            with gr.Column(scale=2):
                c["info"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_selected")
                c["caption"] = compat.component(gr.Textbox, label="Caption", lines=3, interactive=True,
                                                elem_id="clipcap_review_caption")
                with gr.Row():
                    c["prev"] = compat.component(gr.Button, value="← Previous", elem_id="clipcap_review_prev")
                    c["next"] = compat.component(gr.Button, value="Next →", elem_id="clipcap_review_next")
                    c["save"] = compat.component(gr.Button, value="Save", variant="primary",
                                                 elem_id="clipcap_review_save")
                    c["undo"] = compat.component(gr.Button, value="Undo", elem_id="clipcap_review_undo")
                with gr.Row():
                    c["recaption"] = compat.component(gr.Button, value="Recaption selected",
                                                      elem_id="clipcap_review_recaption")
                    c["use"] = compat.component(gr.Button, value="Use candidate", elem_id="clipcap_review_use")
                c["candidates"] = compat.component(gr.Radio, choices=[], label="Candidates (model and options of the "
                                                   "panel above)", elem_id="clipcap_review_candidates")
                c["compare"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_compare")
        c["status"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_status")
        with gr.Accordion("Bulk edit", open=False, elem_id="clipcap_review_bulk"):
            with gr.Row():
                c["find"] = compat.component(gr.Textbox, label="Find", elem_id="clipcap_review_find")
                c["replace"] = compat.component(gr.Textbox, label="Replace with", elem_id="clipcap_review_replace")
                c["bulk_regex"] = compat.component(gr.Checkbox, label="Regular expression", value=False,
                                                   elem_id="clipcap_review_bulk_regex")
                c["prefix"] = compat.component(gr.Textbox, label="Prefix (trigger word)",
                                               elem_id="clipcap_review_prefix")
                c["scope"] = compat.component(gr.Radio, choices=list(SCOPES), value=SCOPES[0], label="Apply to",
                                              elem_id="clipcap_review_scope")
            with gr.Row():
                c["preview_bulk"] = compat.component(gr.Button, value="Preview", elem_id="clipcap_review_bulk_preview")
                c["apply_bulk"] = compat.component(gr.Button, value="Apply", variant="stop",
                                                   elem_id="clipcap_review_bulk_apply")
            c["bulk_info"] = compat.component(gr.Markdown, value="", elem_id="clipcap_review_bulk_info")
            with gr.Row():
                c["add_tags"] = compat.component(gr.Textbox, label="Add tags", placeholder="e.g. outdoors, smile",
                                                 elem_id="clipcap_review_add_tags")
                c["remove_tags"] = compat.component(gr.Textbox, label="Remove tags", placeholder="e.g. blurry",
                                                    elem_id="clipcap_review_remove_tags")
                c["tags_preview"] = compat.component(gr.Button, value="Preview tags",
                                                     elem_id="clipcap_review_tags_preview")
                c["tags_apply"] = compat.component(gr.Button, value="Apply tags", variant="stop",
                                                   elem_id="clipcap_review_tags_apply")

    view_inputs = [c["sort"], c["flags"], c["text"], c["regex"], c["min"], c["max"]]
    outputs = [state] + [c[name] for name in OUTPUTS[1:]]
    c["scan"].click(fn=ui.scan, inputs=[c["folder"], c["caption_ext"], model, *view_inputs, state, c["triggers"],
                                        c["tag_filter"], c["tag_vocabulary"]], outputs=outputs)
    c["scan"].click(fn=None, inputs=None, outputs=None, **compat.event_js(KEYS_JS))
    for comp in (c["sort"], c["flags"], c["regex"]):
        comp.change(fn=ui.refilter, inputs=[*view_inputs, state, c["tag_filter"]], outputs=outputs)
    for comp in (c["text"], c["min"], c["max"], c["tag_filter"]):
        comp.submit(fn=ui.refilter, inputs=[*view_inputs, state, c["tag_filter"]], outputs=outputs)

    def on_select(st, evt):
        return ui.select(int(evt.index if not isinstance(evt.index, (list, tuple)) else evt.index[0]), st)

    # Gradio finds the event-data argument by its annotation; set the class itself (this module's annotations are
    # strings, which gradio cannot resolve to a class it imported locally).
    on_select.__annotations__["evt"] = gr.SelectData

    selected = [state, c["preview"], c["info"], c["caption"]]
    c["gallery"].select(fn=on_select, inputs=[state], outputs=selected)
    c["next"].click(fn=lambda st: ui.step(1, st), inputs=[state], outputs=selected)
    c["prev"].click(fn=lambda st: ui.step(-1, st), inputs=[state], outputs=selected)
    c["save"].click(fn=ui.save, inputs=[c["caption"], state], outputs=outputs)
    c["prev_page"].click(fn=lambda st: ui.page(-1, st), inputs=[state], outputs=outputs)
    c["next_page"].click(fn=lambda st: ui.page(1, st), inputs=[state], outputs=outputs)
    c["goto"].submit(fn=ui.goto, inputs=[c["goto"], state], outputs=outputs)
    # Only what the user ticks (``input``, where gradio has it): a page change sets the boxes without a round trip.
    picked_event = getattr(c["picked"], "input", None) or c["picked"].change
    picked_event(fn=ui.pick, inputs=[c["picked"], state], outputs=[state, c["position"]])
    for name, which in (("pick_page", "page"), ("pick_view", "view"), ("pick_none", "none")):
        c[name].click(fn=lambda st, w=which: ui.select_rows(w, st), inputs=[state],
                      outputs=[state, c["position"], c["picked"]])
    c["undo"].click(fn=ui.undo, inputs=[state], outputs=outputs)
    c["recaption"].click(fn=ui.recaption, inputs=[model, state, *option_inputs],
                         outputs=[c["candidates"], c["compare"]])
    c["use"].click(fn=lambda chosen, current: chosen or current, inputs=[c["candidates"], c["caption"]],
                   outputs=[c["caption"]])
    bulk_inputs = [c["find"], c["replace"], c["bulk_regex"], c["prefix"], state, c["scope"]]
    c["preview_bulk"].click(fn=ui.bulk_preview, inputs=bulk_inputs, outputs=[c["bulk_info"]])
    c["apply_bulk"].click(fn=ui.bulk_apply, inputs=bulk_inputs, outputs=outputs)
    tag_inputs = [c["add_tags"], c["remove_tags"], state, c["scope"]]
    c["tags_preview"].click(fn=ui.tags_preview, inputs=tag_inputs, outputs=[c["bulk_info"]])
    c["tags_apply"].click(fn=ui.tags_apply, inputs=tag_inputs, outputs=outputs)
    c["state"] = state
    return c
