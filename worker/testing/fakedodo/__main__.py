"""`python -m worker.testing.fakedodo --port 8123 --payments 10000`: the fake Dodo API on its own."""

from worker.testing.fakedodo.server import main

main()
