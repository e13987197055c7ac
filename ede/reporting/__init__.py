"""Pictures and one self-contained HTML page per run, from what the run stored."""
