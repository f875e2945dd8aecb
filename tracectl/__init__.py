"""tracectl: the operators' and technicians' command line."""
