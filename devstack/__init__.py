"""The local, Docker-free stack: install, start, check and stop every service as a process."""
