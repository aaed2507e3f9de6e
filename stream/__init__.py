"""desktrace stream."""
