"""`python -m vibecraft_api` (the same as the vibecraft-api console script)."""

from vibecraft_api.main import main

main()
