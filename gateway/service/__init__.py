"""The running daemon: start-up checks, the runner loop, and the jobs on a clock."""
