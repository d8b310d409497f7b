"""Built-in presets (YAML); installed as the package sketchcolor_cli.presets."""
