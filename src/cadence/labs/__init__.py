"""Built-in labs: small models trained on a CPU in minutes to show what each regimen buys."""
