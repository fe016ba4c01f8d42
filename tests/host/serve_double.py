"""Serve the WebUI double with this extension on 127.0.0.1 until stdin closes (used by test_webui_browser.py).

    python serve_double.py MODE PORT ROOT IMAGE...   # IMAGEs: what the fake txt2img "Generate" shows

Prints ``READY <url>`` once the page is served.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webui_double as wd  # noqa: E402

mode, port, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
(root / "config.json").write_text(json.dumps({"clipcap_model": "shapes-demo", "clipcap_decoding": "greedy"}))
webui = wd.WebUI(mode, root).boot()
from PIL import Image  # noqa: E402
from modules import ui  # noqa: E402

ui.fake_outputs[:] = [Image.open(p).convert("RGB") for p in sys.argv[4:]]
demo = webui.create_ui()
demo.queue()
demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
print(f"READY http://127.0.0.1:{port}/", flush=True)
sys.stdin.read()
demo.close()
