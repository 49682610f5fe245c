from llmos_shell.cli.app import main

main()
