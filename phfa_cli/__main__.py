from phfa_cli.app import main

main()
