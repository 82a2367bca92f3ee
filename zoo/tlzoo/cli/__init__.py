"""The ``tlzoo`` command line: one small module per command."""
