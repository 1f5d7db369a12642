"""Message limits. Big payloads stream in chunks, so no single message is large."""

CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 8 << 20
