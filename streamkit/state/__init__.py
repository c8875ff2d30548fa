"""State: tables, their per-task SQLite stores, changelogs and restore."""
