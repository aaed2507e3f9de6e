"""desktrace gateway."""
