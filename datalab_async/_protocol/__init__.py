"""Pure protocol code: request descriptions, response classification, validation, SSE decoding.

Nothing in this package performs network I/O; it is tested with plain values and recorded bodies.
"""

__all__: list[str] = []
