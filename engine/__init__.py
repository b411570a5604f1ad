"""Runtime: command line, image I/O, and (later) backends, bridge and solver."""
