from zserve.cli import main

main()
