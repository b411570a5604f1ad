"""Everything that runs a restoration: problems (operators, losses, metrics), the solver, the
runtimes that run exported graphs, the application (restore runs) and the `ilo` command."""
