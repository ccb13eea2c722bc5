"""The models' saves: their checks, their queries, values the columns cannot hold."""
