"""Extended mode, platform-free: the parameters (editable field values) of the foreground window, read when a
field gains and when it loses the keyboard focus, as the product defines them.

Rules (tested in tests/test_windows_desk.py):

- only ``Edit`` and ``ComboBox`` elements are parameters;
- a value is read when the field gains the focus and again when it loses it; it is ``edited`` when the
  two differ (or it was already marked edited in this window);
- a value is cut to ``max_chars`` characters (default 256, setting ``field_max_chars``);
- a field inside web page content (a ``Document`` element of a browser window) is never read unless
  ``web_fields`` is set (setting ``extended_web_fields``);
- a password field (``IsPassword``) is listed with ``password=True``, ``edited=True`` once it had the
  focus, and its Value pattern is never called;
- the parameters belong to one window: they are dropped when the foreground window changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from agent.sources.wintree import ancestors, attr, control_type, is_document, is_password, key, read_value
from proto.events import FieldValue

PARAMETER_TYPES: Final = frozenset({"Edit", "ComboBox"})
DEFAULT_MAX_CHARS: Final = 256
#: Parameters kept per window, at most (the oldest is dropped first).
MAX_FIELDS: Final = 50


def cap(value: str | None, max_chars: int) -> str | None:
    return value if value is None or len(value) <= max_chars else value[:max_chars]


def in_web_content(el: Any) -> bool:
    return any(is_document(a) for a in ancestors(el))


@dataclass
class _Focused:
    ident: str
    element: Any
    name: str
    ctype: str
    password: bool
    value: str | None


@dataclass
class FocusFields:
    """The foreground window's parameters (see the module docstring for the rules it guarantees)."""

    max_chars: int = DEFAULT_MAX_CHARS
    web_fields: bool = False
    max_fields: int = MAX_FIELDS
    _window: str = ""
    _fields: dict[str, FieldValue] = field(default_factory=dict)
    _focused: _Focused | None = None

    def window(self, window_id: str) -> None:
        """The foreground window is ``window_id``: another window's parameters are dropped."""
        if window_id != self._window:
            self._window = window_id
            self._fields = {}
            self._focused = None

    def focus(self, el: Any | None, *, browser: bool) -> bool:
        """The keyboard focus moved to ``el`` (None: unknown or outside the window). Returns True when the
        parameters changed."""
        changed = self._lose()
        if el is None or control_type(el) not in PARAMETER_TYPES:
            return changed
        if browser and not self.web_fields and in_web_content(el):
            return changed
        name = str(attr(el, "Name"))
        ident = str(attr(el, "AutomationId")) or name or ".".join(map(str, _as_tuple(key(el))))
        ctype = control_type(el)
        if is_password(el):
            self._focused = _Focused(ident, el, name, ctype, True, None)
            return self._put(ident, FieldValue(name=name, control_type=ctype, edited=True, password=True))
        value = cap(read_value(el), self.max_chars)
        self._focused = _Focused(ident, el, name, ctype, False, value)
        before = self._fields.get(ident)
        edited = before.edited if before is not None else False
        fv = FieldValue(name=name, control_type=ctype, value=value, edited=edited)
        return self._put(ident, fv) or changed

    def _lose(self) -> bool:
        f, self._focused = self._focused, None
        if f is None or f.password:
            return False
        value = cap(read_value(f.element), self.max_chars)
        if value is None:  # gone with its window or dialog: keep what was read on focus
            return False
        before = self._fields.get(f.ident)
        edited = (before.edited if before is not None else False) or value != f.value
        return self._put(f.ident, FieldValue(name=f.name, control_type=f.ctype, value=value, edited=edited))

    def _put(self, ident: str, fv: FieldValue) -> bool:
        if self._fields.get(ident) == fv:
            return False
        self._fields.pop(ident, None)
        self._fields[ident] = fv
        while len(self._fields) > self.max_fields:
            self._fields.pop(next(iter(self._fields)))
        return True

    def fields(self) -> list[FieldValue]:
        return list(self._fields.values())


def _as_tuple(k: Any) -> tuple[Any, ...]:
    return k if isinstance(k, tuple) else (k,)
