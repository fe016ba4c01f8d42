"""The page's view of the WebUI double: the Blocks config served at ``/config``, and events run as the page runs them.

A browser knows a component only through that JSON (``choices``, ``value``) and sends back what it shows there; the
server then runs the event's ``preprocess`` -> function -> ``postprocess`` behind ``POST /run/predict`` (gradio 5+:
``/gradio_api/run/predict``). :class:`Page` does the same over HTTP (FastAPI's TestClient on gradio's own app), so
a choice that gradio stores in another form than the one the extension built it with (gradio 3.41's ``Dropdown``
turns a ``(label, value)`` pair into the text ``"('label', 'value')"``) reaches the handler as it would in the real
host. Works with gradio 3.41, 4.x and later.

The double's "Generate" buttons return canned images; :func:`add_event` wires the host's own calls
(``processing.txt2img``, ``img2img.img2img``, ``postprocessing.run_postprocessing``) as extra click events on the
page, with the script controls as inputs, the way the real host's buttons pass them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

#: How a Python tuple or list looks once turned into text by ``str()``: what the page must never show as a label.
REPR_OF_A_PAIR = re.compile(r"^\s*[(\[].*,.*[)\]]\s*$", re.S)
CHOICE_TYPES = ("dropdown", "radio", "checkboxgroup")


def add_event(demo: Any, trigger: Any, fn: Callable[..., Any], inputs: Sequence[Any], outputs: Sequence[Any],
              api_name: str) -> None:
    """A click event of ``trigger`` added to the built ``demo`` (call before :class:`Page`)."""
    with demo:
        trigger.click(fn=fn, inputs=list(inputs), outputs=list(outputs), api_name=api_name)


class Page:
    """What the browser gets from ``demo`` and what it sends back."""

    def __init__(self, demo: Any) -> None:
        from fastapi.testclient import TestClient
        from gradio import routes

        self.demo = demo
        self.client = TestClient(routes.App.create_app(demo))
        r = self.client.get("/config")
        assert r.status_code == 200, r.text
        self.config = r.json()
        self.components = {c["id"]: c for c in self.config["components"]}
        self.by_elem_id = {c.get("props", {}).get("elem_id"): c for c in self.config["components"]
                           if c.get("props", {}).get("elem_id")}
        self._api = "/run/predict"
        if self.client.post(self._api, json={}).status_code == 404:  # gradio 5+: the API lives under /gradio_api
            self._api = "/gradio_api/run/predict"

    # ------------------------------------------------------------------------------------------------ components
    def component(self, elem_id: str) -> dict[str, Any]:
        try:
            return self.by_elem_id[elem_id]
        except KeyError:
            raise LookupError(f"the page has no component with elem_id {elem_id!r}") from None

    def props(self, elem_id: str) -> dict[str, Any]:
        return self.component(elem_id)["props"]

    def choices(self, elem_id: str) -> list[tuple[Any, Any]]:
        """``(label shown, value sent)`` of each choice, as the page reads the config: a plain choice is both (gradio
        3.41's ``Dropdown`` keeps only plain strings), a ``[label, value]`` pair is shown as label and sends value."""
        out = []
        for c in self.props(elem_id).get("choices") or []:
            if isinstance(c, (list, tuple)):
                assert len(c) == 2, f"{elem_id}: the page cannot show the choice {c!r}"
                out.append((c[0], c[1]))
            else:
                out.append((c, c))
        return out

    def value_of(self, elem_id: str, label: str) -> Any:
        """The value the page sends when the user picks the choice shown as ``label``."""
        shown = self.choices(elem_id)
        for lab, value in shown:
            if lab == label:
                return value
        raise LookupError(f"{elem_id}: no choice shown as {label!r}; the page shows {[lab for lab, _ in shown]}")

    def choice_components(self, pattern: str = "clipcap") -> list[str]:
        """elem_ids of the choice components (dropdown, radio, checkbox group) whose elem_id contains ``pattern``."""
        return sorted(e for e, c in self.by_elem_id.items() if pattern in e and c["type"] in CHOICE_TYPES)

    def problems(self, elem_id: str) -> list[str]:
        """What is wrong with a choice component as the page shows it (empty: every choice is a string or a
        ``[label, value]`` pair, no label reads like a Python tuple, and the value is one of the choices)."""
        comp = self.component(elem_id)
        props = comp["props"]
        bad = []
        try:
            shown = self.choices(elem_id)
        except AssertionError as e:
            return [str(e)]
        for label, value in shown:
            if not isinstance(label, str):
                bad.append(f"label {label!r} is not text")
            elif REPR_OF_A_PAIR.match(label):
                bad.append(f"the page shows the label {label!r} (a Python tuple turned into text)")
            if isinstance(value, str) and REPR_OF_A_PAIR.match(value):
                bad.append(f"the page sends the value {value!r} (a Python tuple turned into text)")
        values = [v for _, v in shown]
        value = props.get("value")
        chosen = value if isinstance(value, list) else [] if value is None else [value]
        if shown and not (comp["type"] == "dropdown" and props.get("allow_custom_value")):
            for v in chosen:
                if v not in values:
                    bad.append(f"its value {v!r} is not one of its choices {values}")
        return [f"{elem_id}: {b}" for b in bad]

    # ---------------------------------------------------------------------------------------------------- events
    def fn_index(self, *, api_name: str | None = None, target: str | None = None, trigger: str = "click") -> int:
        """The index the page sends for the event named ``api_name``, or the ``trigger`` event of elem_id ``target``."""
        target_id = self.component(target)["id"] if target is not None else None
        for i, dep in enumerate(self.config["dependencies"]):
            if api_name is not None and dep.get("api_name") == api_name:
                return dep.get("id", i)
            if target_id is not None:
                targets = dep.get("targets") or []
                if dep.get("trigger") == trigger and target_id in targets:  # gradio 3
                    return dep.get("id", i)
                if any(isinstance(t, (list, tuple)) and list(t) == [target_id, trigger] for t in targets):  # 4+
                    return dep.get("id", i)
        raise LookupError(f"no event api_name={api_name!r} target={target!r} on the page")

    def dependency(self, fn_index: int) -> dict[str, Any]:
        for i, dep in enumerate(self.config["dependencies"]):
            if dep.get("id", i) == fn_index:
                return dep
        raise LookupError(fn_index)

    def inputs(self, fn_index: int, **by_elem_id: Any) -> list[Any]:
        """The event's input values as the page sends them: each component's config value, with ``by_elem_id``
        (values the user picked, e.g. from :meth:`value_of`) in place of those components'."""
        data = []
        used = set()
        for cid in self.dependency(fn_index)["inputs"]:
            props = self.components[cid].get("props", {})
            elem_id = props.get("elem_id")
            if elem_id in by_elem_id:
                data.append(by_elem_id[elem_id])
                used.add(elem_id)
            else:
                data.append(props.get("value"))
        missing = set(by_elem_id) - used
        assert not missing, f"not inputs of the event: {sorted(missing)}"
        return data

    def run(self, fn_index: int, data: Sequence[Any]) -> list[Any]:
        """``POST /run/predict`` as the page does; the event's outputs (an error answer fails the test)."""
        r = self.client.post(self._api, json={"data": list(data), "fn_index": fn_index, "session_hash": "page"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "error" not in body or body["error"] is None, body
        return body["data"]
