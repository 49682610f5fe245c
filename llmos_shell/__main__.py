from llmos_shell.cli import main

main()
