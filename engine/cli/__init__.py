"""The `ilo` command: one small module per subcommand over the library."""
