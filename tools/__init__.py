"""Developer tooling that the product never imports: local Serve, random-weight models, test audio."""
