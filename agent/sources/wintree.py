"""Reading UI Automation element trees, platform-free: bounded walks, properties that may vanish, the
hierarchy from a window to its focused element.

Elements are duck-typed like ``uiautomation`` Controls: ``Name``, ``ControlTypeName``, ``ClassName``,
``AutomationId``, ``IsPassword``, ``HasKeyboardFocus``, ``GetChildren()``, ``GetParentControl()``,
``GetRuntimeId()``, ``GetValuePattern().Value`` and ``GetSelectionItemPattern().IsSelected``. The tests
feed recorded trees of the same shape.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from proto.events import UiNode

MAX_DEPTH: Final = 16
#: Elements visited by one search, at most (UI Automation calls cross processes: ~0.1-1 ms each).
MAX_NODES: Final = 600


def attr(el: Any, name: str, default: Any = "") -> Any:
    """An element property; UIA raises when an element vanished meanwhile: that reads as ``default``."""
    try:
        value = getattr(el, name)
    except Exception:
        return default
    return default if value is None else value


def children(el: Any) -> list[Any]:
    try:
        return list(el.GetChildren() or [])
    except Exception:
        return []


def parent(el: Any) -> Any | None:
    try:
        return el.GetParentControl()
    except Exception:
        return None


def control_type(el: Any) -> str:
    """``EditControl`` -> ``Edit`` (the UIA control type name without the suffix uiautomation adds)."""
    name = str(attr(el, "ControlTypeName"))
    return name[: -len("Control")] if name.endswith("Control") else name


def is_document(el: Any) -> bool:
    return control_type(el) == "Document"


def walk(
    root: Any,
    *,
    skip: Callable[[Any], bool] = is_document,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Iterator[tuple[Any, int]]:
    """Breadth-first ``(element, depth)`` below ``root`` (root excluded), not entering elements for which
    ``skip`` is true (they are yielded, their children are not), bounded in depth and count. By default
    page content (``Document`` elements) is not entered."""
    queue: deque[tuple[Any, int]] = deque((c, 1) for c in children(root))
    seen = 0
    while queue and seen < max_nodes:
        el, depth = queue.popleft()
        seen += 1
        yield el, depth
        if depth < max_depth and not skip(el):
            queue.extend((c, depth + 1) for c in children(el))


def first(root: Any, pred: Callable[[Any], bool], **kw: Any) -> Any | None:
    for el, _ in walk(root, **kw):
        if pred(el):
            return el
    return None


def key(el: Any) -> Any:
    """Identity of an element across wrapper objects: its runtime id when it has one, else the object."""
    try:
        rid = el.GetRuntimeId()
    except Exception:
        rid = None
    return tuple(rid) if rid else id(el)


def read_value(el: Any) -> str | None:
    """The value of an element through its Value pattern (never called for password fields)."""
    try:
        pattern = el.GetValuePattern()
        value = pattern.Value if pattern is not None else None
    except Exception:
        return None
    return None if value is None else str(value)


def is_password(el: Any) -> bool:
    return bool(attr(el, "IsPassword", False))


def is_selected(el: Any) -> bool:
    try:
        pattern = el.GetSelectionItemPattern()
        return bool(pattern is not None and pattern.IsSelected)
    except Exception:
        return False


def ancestors(el: Any, *, limit: int = 64) -> Iterator[Any]:
    """The element's parents, nearest first (bounded)."""
    cur = parent(el)
    n = 0
    while cur is not None and n < limit:
        yield cur
        cur = parent(cur)
        n += 1


def hierarchy(top: Any, focused: Any | None, *, max_depth: int = 32) -> list[UiNode]:
    """Names and control types from the top-level window down to the focused element (the window alone when
    the focus is elsewhere or unknown). Only names (labels) and types are read, never values."""

    def node(el: Any) -> UiNode:
        return UiNode(name=str(attr(el, "Name")), control_type=control_type(el))

    chain: list[Any] = []
    el = focused
    top_key = key(top)
    while el is not None and len(chain) < max_depth:
        if key(el) == top_key:
            return [node(top), *(node(e) for e in reversed(chain))]
        chain.append(el)
        el = parent(el)
    return [node(top)]
