from hybridlm.cli import main

main()
