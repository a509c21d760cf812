"""``python -m taskspace``: the CLI."""
from .cli import main

# guarded: worker processes (``--workers``) are spawned, and a spawned child imports the parent's
# main module under another name; it must not start a second CLI.
if __name__ == "__main__":
    main()
