"""phfa command-line interface (Typer). Thin: parses options, calls `pipeline`, prints with rich."""
