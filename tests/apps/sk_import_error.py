"""Raises while it is being imported, as an app with a broken config would."""

import streamkit as sk

app = sk.App("never", broker="memory://")
raise RuntimeError("configuration file clicks.toml is missing")
