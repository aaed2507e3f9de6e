"""desktrace agent."""
