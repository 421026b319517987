"""The example domain: meeting rooms, user sessions, transcripts and their summaries."""
