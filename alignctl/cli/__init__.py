"""The command line: argv -> a command (`train`, `eval`, `ls`, `report`), usage and help text, option listings."""
