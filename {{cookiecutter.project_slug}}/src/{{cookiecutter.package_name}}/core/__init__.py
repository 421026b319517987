"""Cross-cutting pieces: settings and the database layer."""
