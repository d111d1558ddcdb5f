"""Plumbing every app shares and that knows no app: the domain error type, the HTTP base of the outside-system
clients, and reading JSON that other systems send. Not a Django app: no models, no settings of its own."""
