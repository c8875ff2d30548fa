"""Exists, but imports a module that does not."""

import sk_no_such_dependency  # noqa: F401

import streamkit as sk

app = sk.App("never", broker="memory://")
