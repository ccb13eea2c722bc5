"""The pull and the mirror."""
