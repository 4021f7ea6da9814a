"""conceptspace."""
