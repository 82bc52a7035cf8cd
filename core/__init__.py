"""The shared core every app may import: HTTP-mapped domain errors, secret files, actors.

It is the bottom layer (docs/architecture.md): it imports no app of this project.
"""
