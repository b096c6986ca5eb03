"""One module per notebook family: its parameters, what it runs, and the checks of its record."""
