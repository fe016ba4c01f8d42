"""modules/gradio_extensons.py (Forge: gradio_extensions.py): every gradio component and layout fires the hooks.

As in the host (docs/hosts.md, loading): pop ``tooltip``; ``scripts_current.before_component`` then the global
``before_component`` callbacks; the original ``__init__``; the ``gradio-<block>`` class; the global
``after_component`` callbacks then ``scripts_current.after_component``, all with the kwargs the gradio subclass
passes up. gradio 3 patches ``IOComponent``, gradio 4 ``Component``; both patch ``BlockContext``.

The patch is process-wide and looks the hook modules up at call time (the double is re-imported per test);
``unpatch()`` restores gradio.
"""

import sys

import gradio as gr


def add_classes_to_gradio_component(comp):
    comp.elem_classes = [f"gradio-{comp.get_block_name()}", *(comp.elem_classes or [])]
    if getattr(comp, 'multiselect', False):
        comp.elem_classes.append('multiselect')


def _hooks():
    return sys.modules.get("modules.scripts"), sys.modules.get("modules.script_callbacks")


def _make(original, pop_tooltip):
    def init(self, *args, **kwargs):
        if pop_tooltip:
            self.webui_tooltip = kwargs.pop('tooltip', None)
        scripts, callbacks = _hooks()
        if scripts is None or callbacks is None:
            return original(self, *args, **kwargs)
        if scripts.scripts_current is not None:
            scripts.scripts_current.before_component(self, **kwargs)
        callbacks.before_component_callback(self, **kwargs)
        res = original(self, *args, **kwargs)
        add_classes_to_gradio_component(self)
        callbacks.after_component_callback(self, **kwargs)
        if scripts.scripts_current is not None:
            scripts.scripts_current.after_component(self, **kwargs)
        return res

    init.webui_double_original = original
    return init


def _targets():
    component = getattr(gr.components, "IOComponent", None) or gr.components.Component
    return [(component, True), (gr.blocks.BlockContext, False)]


def _pyi_patch():
    """gradio 4 writes a ``.pyi`` beside every module that defines a component class; the host's classes carry
    ``webui_do_not_create_gradio_pyi_thank_you`` and are skipped, as in Forge."""
    meta = sys.modules.get("gradio.component_meta")
    original = getattr(meta, "create_or_modify_pyi", None)
    if original is None or hasattr(original, "webui_double_original"):
        return

    def create_or_modify_pyi(component_class, class_name, events):
        if getattr(component_class, "webui_do_not_create_gradio_pyi_thank_you", False):
            return
        return original(component_class, class_name, events)

    create_or_modify_pyi.webui_double_original = original
    meta.create_or_modify_pyi = create_or_modify_pyi


def patch():
    for cls, pop_tooltip in _targets():
        if not hasattr(cls.__init__, "webui_double_original"):
            cls.__init__ = _make(cls.__init__, pop_tooltip)
    _pyi_patch()


def unpatch():
    for cls, _ in _targets():
        original = getattr(cls.__init__, "webui_double_original", None)
        if original is not None:
            cls.__init__ = original
    meta = sys.modules.get("gradio.component_meta")
    original = getattr(getattr(meta, "create_or_modify_pyi", None), "webui_double_original", None)
    if original is not None:
        meta.create_or_modify_pyi = original


patch()
