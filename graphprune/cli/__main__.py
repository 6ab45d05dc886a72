"""`python -m graphprune.cli` runs the command line."""

from graphprune.cli import main

if __name__ == "__main__":
    main()
