"""The pure sessionizer core: raw events of one user -> activity/inactivity sessions
(``shared/spec/sessions.md``). No faust, no aiokafka, no clock, no I/O."""

from stream.core.config import SessionizerConfig
from stream.core.sessionizer import Intake, Sessionizer, Update
from stream.core.state import WRITE_VERSIONS, UserState, decode_state, encode_state

__all__ = [
    "WRITE_VERSIONS",
    "Intake",
    "Sessionizer",
    "SessionizerConfig",
    "Update",
    "UserState",
    "decode_state",
    "encode_state",
]
