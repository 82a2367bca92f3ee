"""Deprecated import locations kept for plugins written against tlzoo 0.1 (see docs/writing-plugins.md)."""
