"""desktrace sinks."""
