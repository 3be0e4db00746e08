"""Run inside a notebook's kernel by make_slides.py: draw a live widget at a few of its states.

A slide deck has no kernel, so a slider in it would be dead. After a notebook has run, the
builder sends this file's source to the still-running kernel and calls ``show_states(model_id)``
for each widget the notebook displayed. It moves the widget's first slider (or, with no slider,
its first drop-down) to its minimum, its starting value and its maximum, and for each position
captures what the widget's own callback draws (figures, printed text) and what its readouts
(HTML/Label widgets) say. The slider is left where it started. A widget with nothing to move
(a tqdm progress bar) gets one record with no label, and the builder drops it.

Each state is displayed as one ``application/vnd.lorakit.widget-state+json`` record (label,
readouts, printed text, error) followed by the figures drawn for it; make_slides.py turns them
into slides. Nothing is printed: the kernel buffers printed text, and a buffer flushed while the
widget's ``Output`` is active would be routed into that widget and lost.
Nothing here is lorakit-specific: it drives any core-ipywidgets control through its ``value``.
"""

from __future__ import annotations

STATE_MIME = "application/vnd.lorakit.widget-state+json"


def _registry() -> dict:
    try:
        from ipywidgets.widgets.widget import _instances  # ipywidgets >= 8

        return _instances
    except ImportError:  # pragma: no cover - ipywidgets 7
        import ipywidgets

        return ipywidgets.Widget.widgets


def _walk(widget):
    """The widget and everything inside it, depth first (Box children, in order)."""
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


def _control(widget):
    """The control whose states are shown: the first slider, else the first drop-down."""
    import ipywidgets as w

    sliders = (w.IntSlider, w.FloatSlider, w.FloatLogSlider, w.SelectionSlider)
    choices = (w.Dropdown, w.ToggleButtons, w.RadioButtons)
    found = list(_walk(widget))
    return next((c for c in found if isinstance(c, sliders)), None) or next(
        (c for c in found if isinstance(c, choices)), None
    )


def _positions(control) -> list:
    """Minimum, starting value and maximum (in that order, without repeats)."""
    if hasattr(control, "options") and not hasattr(control, "min"):
        values = (
            [v for _, v in control._options_full]
            if hasattr(control, "_options_full")
            else list(control.options)
        )
        picks = [values[0], control.value, values[-1]]
    else:
        picks = [control.min, control.value, control.max]
    out = []
    for v in picks:
        if v not in out:
            out.append(v)
    return out


def _label(control, value) -> str:
    name = (control.description or "value").strip()
    if hasattr(control, "options") and hasattr(control, "_options_full"):
        value = next((lab for lab, v in control._options_full if v == value), value)
    return f"{name} = {value:g}" if isinstance(value, float) else f"{name} = {value}"


def _readouts(widget) -> list[str]:
    import html
    import re

    import ipywidgets as w

    texts = []
    for c in _walk(widget):
        if isinstance(c, (w.HTML, w.Label, w.HTMLMath)) and str(c.value).strip():
            texts.append(html.unescape(re.sub(r"<[^>]+>", "", str(c.value))).strip())
    return texts


class _Captured:
    """What a widget drew: ``stdout`` (text) and ``outputs`` (display data dicts), like IPython's
    ``capture_output``, whose publisher cannot be used here: ipywidgets' ``Output`` calls
    ``set_parent`` on the shell, which passes it on to the display publisher."""

    def __init__(self):
        import io

        from IPython.core.displaypub import CapturingDisplayPublisher

        class Publisher(CapturingDisplayPublisher):
            def set_parent(self, parent):  # captured outputs have no parent message
                pass

        self.publisher, self.buffer, self.errors = Publisher(), io.StringIO(), io.StringIO()

    def __enter__(self):
        import sys

        from IPython import get_ipython

        self.shell = get_ipython()
        self.saved = self.shell.display_pub, sys.stdout, sys.stderr
        # stderr (warnings) is captured too, and dropped: sent while the widget's Output is
        # active, it would be routed into that widget by the front end
        self.shell.display_pub, sys.stdout, sys.stderr = self.publisher, self.buffer, self.errors
        return self

    def __exit__(self, *exc):
        import sys

        self.shell.display_pub, sys.stdout, sys.stderr = self.saved
        return False

    @property
    def stdout(self) -> str:
        return self.buffer.getvalue()

    @property
    def outputs(self) -> list[dict]:
        return list(self.publisher.outputs)


def _set(control, value):
    """Set ``control.value`` and capture everything its observers draw; (capture, error)."""
    from IPython import get_ipython

    ip = get_ipython()
    errors = []
    shown = ip.showtraceback

    def record(exc_tuple=None, *args, **kwargs):  # interact() and Output report errors this way
        import sys

        errors.append(repr((exc_tuple or sys.exc_info())[1]))

    ip.showtraceback = record
    cap = None
    try:
        with _Captured() as cap:
            control.value = value
    except Exception as e:  # noqa: BLE001 - reported with the state, not raised into the kernel
        errors.append(repr(e))
    finally:
        ip.showtraceback = shown
    return cap, "; ".join(errors)


def show_states(model_id: str) -> None:
    """Display each state of the widget ``model_id`` (see the module docstring)."""
    from IPython.display import display

    widget = _registry().get(model_id)
    control = _control(widget) if widget is not None else None
    if control is None:  # a progress bar (tqdm.notebook) or a display-only widget: nothing to move
        display(
            {
                STATE_MIME: {
                    "label": None,
                    "readouts": _readouts(widget) if widget is not None else [],
                    "stdout": "",
                    "error": None,
                }
            },
            raw=True,
        )
        return
    start = control.value
    positions = _positions(control)
    for value in positions:
        if control.value == value:  # setting an equal value fires nothing: move away first
            other = (
                next(v for v in positions + [start] if v != value) if len(positions) > 1 else None
            )
            if other is None:
                continue
            _set(control, other)
        cap, error = _set(control, value)
        text = (
            cap.stdout.replace("\x1b[2K\r", "") if cap is not None else ""
        )  # clear_output's escape
        display(
            {
                STATE_MIME: {
                    "label": _label(control, value),
                    "readouts": _readouts(widget),
                    "stdout": text.rstrip("\n"),
                    "error": error or None,
                }
            },
            raw=True,
        )
        for output in cap.outputs if cap is not None else ():
            display(output["data"], metadata=output.get("metadata") or {}, raw=True)
    if control.value != start:
        _set(control, start)
