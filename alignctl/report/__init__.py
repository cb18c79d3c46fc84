"""Run directories -> tables with seed intervals (`tables`) and figures (`plots`)."""
