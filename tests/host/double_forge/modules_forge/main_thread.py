"""modules_forge/main_thread.py: Forge runs txt2img/img2img on its main thread; the gradio worker that holds
``queue_lock`` waits for the result. The double keeps one long-lived "main" thread for the same effect: script hooks
run on a thread that does not hold the queue lock itself, while the lock is held on its behalf."""

import queue
import threading

_tasks = queue.Queue()
_thread = None
_start_lock = threading.Lock()


def _loop():
    while True:
        func, args, kwargs, box, done = _tasks.get()
        try:
            box["result"] = func(*args, **kwargs)
        except BaseException as e:  # handed back to the waiting thread
            box["error"] = e
        finally:
            done.set()


def run_and_wait_result(func, *args, **kwargs):
    global _thread
    with _start_lock:
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="forge-main-thread", daemon=True)
            _thread.start()
    box, done = {}, threading.Event()
    _tasks.put((func, args, kwargs, box, done))
    done.wait()
    if "error" in box:
        raise box["error"]
    return box.get("result")
