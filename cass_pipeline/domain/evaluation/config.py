"""The registry's aliases: the model in service, and the newest one registered (the one the
promotion rule compares with it)."""

CHAMPION, CHALLENGER = "champion", "challenger"
