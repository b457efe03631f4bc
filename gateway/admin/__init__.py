"""The administrator's command line: argument parsing, verbs and CSV imports."""
