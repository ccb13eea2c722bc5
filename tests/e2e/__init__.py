"""End to end: real workers, real browsers, the README's quick start."""
