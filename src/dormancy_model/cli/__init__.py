"""The `dormancy` command line: one module per command (`main` wires them), and the demo."""
