//! Key custody behind handles: callers sign and derive without ever holding the key bytes.
