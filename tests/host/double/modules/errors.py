"""modules/errors.py: the host reports exceptions from extension code and goes on. Reports are kept in ``reports``."""

import sys
import traceback

reports = []


def report(message, *, exc_info=False):
    text = message
    if exc_info:
        text += "\n" + traceback.format_exc()
    reports.append(text)
    print("***", text, file=sys.stderr)


def display(e, task, *, full_traceback=False):
    report(f"{task or 'error'}: {type(e).__name__}: {e}", exc_info=True)


def print_error_explanation(message):
    print(message, file=sys.stderr)


def run(code, task):
    try:
        code()
    except Exception as e:
        display(e, task)
