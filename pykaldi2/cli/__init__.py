"""The ``pykaldi2`` command line: one subcommand per pipeline step."""
