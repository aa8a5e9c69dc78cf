"""What the vault and the audit log share, below both: the one encrypted-file format (envelope)
and crash-safe writes (atomic)."""
