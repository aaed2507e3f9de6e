"""Edges shared by every deployable: settings (flags, DESKTRACE_* variables, one TOML file), structured
logging, Kafka client options. Imports nothing server-side, so the agent uses it too."""
