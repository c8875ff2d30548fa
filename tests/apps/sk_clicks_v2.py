"""Exists, but imports a module whose name is a prefix of its own: `sk_clicks`."""

import sk_clicks  # noqa: F401

import streamkit as sk

app = sk.App("never", broker="memory://")
