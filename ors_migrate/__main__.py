from ors_migrate.cli import main

main()
