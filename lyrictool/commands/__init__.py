"""The commands that are not training steps: eval, rhyme, serve, convert (one file each; cli.py calls them)."""
