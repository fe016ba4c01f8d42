"""modules/extensions.py: ``extensions/`` and ``extensions-builtin/`` subfolders become ``Extension`` objects.

Quirk kept from both hosts: ``canonical_name`` is the lower-cased folder name.
"""

import configparser
import os

from modules import shared
from modules._mode import FORGE
from modules.paths_internal import extensions_builtin_dir, extensions_dir

extensions = []
always_disabled_extensions = ["sd-webui-controlnet", "multidiffusion-upscaler-for-automatic1111",
                              "forge_space_example"] if FORGE else []


class ExtensionMetadata:
    filename = "metadata.ini"

    def __init__(self, path, canonical_name):
        self.config = configparser.ConfigParser()
        filepath = os.path.join(path, self.filename)
        if os.path.isfile(filepath):
            self.config.read(filepath)
        self.canonical_name = self.config.get("Extension", "Name", fallback=canonical_name)
        self.canonical_name = canonical_name.lower().strip()  # the host overwrites Name, as here


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False, metadata=None):
        self.name = name
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.metadata = metadata if metadata else ExtensionMetadata(self.path, name.lower())
        self.canonical_name = self.metadata.canonical_name

    def list_files(self, subdir, extension):
        from modules import scripts

        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        res = [scripts.ScriptFile(self.path, filename, os.path.join(dirpath, filename))
               for filename in sorted(os.listdir(dirpath))]
        return [x for x in res if os.path.splitext(x.path)[1].lower() == extension and os.path.isfile(x.path)]


def active():
    if shared.cmd_opts.disable_all_extensions or shared.opts.disable_all_extensions == "all":
        return []
    elif shared.cmd_opts.disable_extra_extensions or shared.opts.disable_all_extensions == "extra":
        return [x for x in extensions if x.enabled and x.is_builtin]
    return [x for x in extensions if x.enabled]


def list_extensions():
    extensions.clear()
    for dirname, is_builtin in ((extensions_builtin_dir, True), (extensions_dir, False)):
        if not os.path.isdir(dirname):
            continue
        for extension_dirname in sorted(os.listdir(dirname)):
            path = os.path.join(dirname, extension_dirname)
            if not os.path.isdir(path):
                continue
            enabled = extension_dirname not in shared.opts.disabled_extensions + always_disabled_extensions
            extensions.append(Extension(name=extension_dirname, path=path, enabled=enabled, is_builtin=is_builtin))


def find_extension(filename):
    """The extension whose folder holds ``filename`` (e.g. its ``scripts/x.py``), or None."""
    path = os.path.realpath(filename)
    for ext in extensions:
        root = os.path.realpath(ext.path)
        if path == root or path.startswith(root + os.sep):
            return ext
    return None
