"""The pure core: the parameter table, the diff, the merge, the form encoding."""
