"""modules_forge/main_thread.py: Forge runs generations on the main thread; the double runs them in place."""


def run_and_wait_result(func, *args, **kwargs):
    return func(*args, **kwargs)
