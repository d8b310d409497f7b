from sketchcolor_cli.cli import main

main()
