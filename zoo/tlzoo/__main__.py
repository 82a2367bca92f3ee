from tlzoo.cli.app import main

main()
