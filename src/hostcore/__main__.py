from hostcore.cli import main

main()
