from hostcore.launcher import main

main()
