"""The `flatscape` command line: parses, loads, calls `distill` and `landscape`, prints."""
