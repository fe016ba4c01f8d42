"""modules/ui_components.py: the host's own component classes, with their ``get_block_name`` overrides.

A1111: ``ToolButton(*args, **kwargs)``; Forge: ``ToolButton(value="", *args, elem_classes=None, **kwargs)`` and
``InputAccordion`` is a factory function.
"""

from functools import wraps

import gradio as gr

from modules._mode import FORGE


def _forge_wraps(base_init):
    """Forge decorates these __init__s with ``@wraps(<gradio class>.__init__)``: gradio 4 builds a component's
    frontend config from its __init__ signature, so without it ``elem_id``, ``interactive``... never reach the page.
    A1111 (gradio 3) has no need; the double applies it whenever it runs on gradio 4+, in either mode."""
    return wraps(base_init) if not hasattr(gr.components, "IOComponent") else (lambda f: f)


class FormComponent:
    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self):
        return gr.components.Form


if FORGE:
    class ToolButton(gr.Button, FormComponent):
        """Small button with single emoji as text, fits inside gradio forms"""

        @wraps(gr.Button.__init__)
        def __init__(self, value="", *args, elem_classes=None, **kwargs):
            elem_classes = elem_classes or []
            super().__init__(*args, elem_classes=["tool", *elem_classes], value=value, **kwargs)

        def get_block_name(self):
            return "button"
else:
    class ToolButton(FormComponent, gr.Button):
        """Small button with single emoji as text, fits inside gradio forms"""

        @_forge_wraps(gr.Button.__init__)
        def __init__(self, *args, **kwargs):
            classes = kwargs.pop("elem_classes", [])
            super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

        def get_block_name(self):
            return "button"


class ResizeHandleRow(gr.Row):
    webui_do_not_create_gradio_pyi_thank_you = True

    @_forge_wraps(gr.Row.__init__)
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")

    def get_block_name(self):
        return "row"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class FormColorPicker(FormComponent, gr.ColorPicker):
    def get_block_name(self):
        return "colorpicker"


class DropdownMulti(FormComponent, gr.Dropdown):
    @_forge_wraps(gr.Dropdown.__init__)
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(FormComponent, gr.Dropdown):
    @_forge_wraps(gr.Dropdown.__init__)
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class InputAccordionImpl(gr.Checkbox):
    """A checkbox (hidden) that drives an accordion; ``extra()`` adds a column in its header."""

    global_index = 0
    webui_do_not_create_gradio_pyi_thank_you = True

    @_forge_wraps(gr.Checkbox.__init__)
    def __init__(self, value=None, **kwargs):
        self.accordion_id = kwargs.get('elem_id')
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordionImpl.global_index}"
            InputAccordionImpl.global_index += 1
        kwargs_checkbox = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **kwargs_checkbox)
        kwargs_accordion = {**kwargs, "elem_id": self.accordion_id, "label": kwargs.get('label', 'Accordion'),
                            "elem_classes": ['input-accordion'], "open": value}
        self.accordion = gr.Accordion(**kwargs_accordion)

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + '-extra', elem_classes='input-accordion-extra', min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"


if FORGE:
    def InputAccordion(value=None, **kwargs):
        return InputAccordionImpl(value=value, **kwargs)
else:
    InputAccordion = InputAccordionImpl
