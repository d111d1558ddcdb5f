from sandbox.evolution.fake import main

main()
