"""desktrace reports."""
