"""desktrace devstack."""
